"""Documents the tests battle over."""

from __future__ import annotations

# A short essay with something for each role: absolute claims, a figure with a source, vague wording.
ESSAY = """# Why every team should write tests

Automated tests always pay for themselves within a week.
Teams that write tests ship 40% fewer bugs, according to our internal survey of 12 teams.
Some people think tests slow you down, but they probably have not tried it properly.
A test suite documents what the code is meant to do, because each test states one expectation.
For example, a test for the parser shows exactly which inputs it accepts.
Code without tests is never safe to change, and everyone knows it.
"""
