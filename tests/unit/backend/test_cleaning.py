"""The reply cleaner: what small models add around their answer is not spoken, in whatever
chunks the answer streams."""

from __future__ import annotations

import pytest

from kame_desktop.backend.cleaning import ReplyCleaner
from kame_desktop.evaluation.scoring import speaker_label


def clean(chunks: list[str]) -> str:
    cleaner = ReplyCleaner()
    return "".join(cleaner.push(c) for c in chunks) + cleaner.flush()


def every_split(text: str) -> list[list[str]]:
    """The text streamed in chunks of 1..7 characters: labels cut anywhere."""
    return [[text[i : i + n] for i in range(0, len(text), n)] for n in range(1, 8)] + [[text]]


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("kame: The capital of France is Paris.", "The capital of France is Paris."),
        ("Assistant:Paris is the capital.", "Paris is the capital."),
        ("The capital is Paris.\nuser: And of Spain?\nkame: Madrid.", "The capital is Paris."),
        ("Here's the corrected text: Paris is the capital of France.", "Paris is the capital of France."),
        ("Sure! Here is my reply: It is Paris.", "It is Paris."),
        ("Here is the answer to your question: It is Paris.", "It is Paris."),
        ("Answer: It is Paris.", "It is Paris."),
        # What announces the reply's content is the reply: spoken, not held back.
        ("Sure, here's a short story about a turtle: Once upon a time, Tim swam.",
         "Sure, here's a short story about a turtle: Once upon a time, Tim swam."),
        ("Here's a fun fact: bees dance.", "Here's a fun fact: bees dance."),
        ("Answering that, Paris.", "Answering that, Paris."),
        ("It is Paris. Kame: really, Paris.", "It is Paris. really, Paris."),
        ("Sure, Paris is the capital.", "Sure, Paris is the capital."),
        ("A user asked about a kame turtle.", "A user asked about a kame turtle."),
        ("Hello there, friend", "Hello there, friend"),
    ],
)
def test_labels_and_preambles_are_not_spoken(raw, said):
    for chunks in every_split(raw):
        out = clean(chunks)
        assert " ".join(out.split()) == said, chunks
        assert not speaker_label(out)


def test_a_clean_reply_is_passed_on_as_it_streams():
    cleaner = ReplyCleaner()
    assert cleaner.push("The capital of") == "The capital of"
    assert cleaner.push(" France is Paris. It") == " France is Paris. It"
    assert cleaner.push(" is lovely") == " is lovely"


def test_an_opening_that_announces_content_streams_before_its_colon():
    cleaner = ReplyCleaner()
    assert cleaner.push("Sure, here") == ""  # may still become "Sure, here is my reply:"
    assert cleaner.push("'s the") == ""
    assert cleaner.push(" story") == "Sure, here's the story"
    cleaner = ReplyCleaner()
    assert cleaner.push("Here's a") + cleaner.push(" short story about") == "Here's a short story about"


def test_a_user_line_ends_the_reply():
    cleaner = ReplyCleaner()
    assert cleaner.push("Paris. ") == "Paris. "
    assert cleaner.push("User: what about") == ""
    assert cleaner.ended
    assert cleaner.push(" Spain? kame: Madrid") == "" and cleaner.flush() == ""
