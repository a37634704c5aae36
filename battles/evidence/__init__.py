"""Evidence anyone can check: the quotes in a turn verified against the document's lines
(`citations`), and the passages of a document that address an AI rather than a reader (`injection`).

Django-free and pure: the engine, the sparring model and the tests all call it with plain text.
"""
