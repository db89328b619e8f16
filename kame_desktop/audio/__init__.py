"""Audio file I/O and framing."""
