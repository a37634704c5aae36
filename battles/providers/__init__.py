"""Calling models: every call goes through litellm (`llm`); the built-in offline `sparring` model and
the optional local model (`localmodel`, SmolLM2 on llama.cpp) are providers like any other."""
