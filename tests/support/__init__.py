"""Test helpers: live servers and their databases, a local OpenAI-compatible server, a cuttable
proxy, an SSE parser, and probes for the real services."""
