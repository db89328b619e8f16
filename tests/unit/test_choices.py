"""choices.py: each provider's named constant is one of its Literal's values, and every value has
its constant (and, for the LLM, its label), so a new provider added to one is not missing from the other."""

from __future__ import annotations

import pytest

from kame_desktop import choices
from kame_desktop.choices import ASR_KINDS, LLM_KINDS, LLM_LABELS, one_of


def _constants(suffix: str) -> set[str]:
    return {value for name, value in vars(choices).items() if name.endswith(suffix) and isinstance(value, str)}


def test_each_llm_provider_has_its_constant_and_label():
    assert _constants("_LLM") == set(LLM_KINDS)
    assert list(LLM_LABELS) == list(LLM_KINDS)  # the settings dialog lists them in this order


def test_each_asr_provider_has_its_constant():
    assert _constants("_ASR") == set(ASR_KINDS)


@pytest.mark.parametrize(("items", "text"), [(("a",), "a"), (("a", "b"), "a or b"), (("a", "b", "c"), "a, b or c")])
def test_one_of_lists_the_choices_as_help_text_does(items, text):
    assert one_of(items) == text
