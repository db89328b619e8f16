"""LLM providers: an async, cancellable stream of text chunks for a list of chat messages."""
