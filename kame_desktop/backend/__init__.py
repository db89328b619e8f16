"""The back-end: streaming ASR → OracleManager → LLM stream → oracle signals for the front-end.

It runs in one worker thread with its own asyncio loop and never imports a front-end: it only
posts signals on the session's bounded queue and publishes events."""
