"""Streaming speech recognition providers."""
