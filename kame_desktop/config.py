"""Settings and secrets. API keys come from the OS keyring (or the KAME_LLM_API_KEY environment
variable), never from the command line, logs or transcripts."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

APP_NAME = "kame-desktop"
KEYRING_SERVICE = APP_NAME
LLM_KEY_NAME = "llm-api-key"
API_KEY_ENV = "KAME_LLM_API_KEY"


def llm_api_key() -> str | None:
    """The back-end LLM's API key: the environment first, then the OS keyring."""
    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, LLM_KEY_NAME)
    except Exception as e:  # no keyring backend on this machine: no stored key
        log.debug("keyring unavailable: %s", type(e).__name__)
        return None
