"""Where the lite front-end cuts a streaming answer for its voice: the pure text functions."""

from __future__ import annotations

from kame_desktop.frontend.lite.sentences import (
    MAX_WORDS,
    TTS_PIECE_CHARS,
    first_clause,
    sentence_ends,
    split_ready,
    spoken_length,
    tts_pieces,
    word_schedule,
)


def ends(text: str) -> list[str]:
    """The sentences that `sentence_ends` finds in `text` (the rest after the last end dropped)."""
    out, used = [], 0
    for match in sentence_ends(text):
        out.append(text[used : match.start()])
        used = match.end()
    return out


def test_sentences_end_at_full_stops_question_and_exclamation_marks_followed_by_a_space():
    assert ends("Really? Yes! It is.  So. End") == ["Really?", "Yes!", "It is.", "So."]
    assert ends("It is.") == []  # no space after it yet: more may come ("It is.5 m" is no sentence end)
    assert ends("It costs 3.50 dollars. Pi is 3.14. Yes") == ["It costs 3.50 dollars.", "Pi is 3.14."]


def test_initials_and_abbreviations_end_no_sentence():
    # "J.K." once ended the first sentence, and all the companion said was "… written by J.K."
    rowling = "The Harry Potter books were written by J.K. Rowling."
    assert spoken_length(rowling + " She lives in Edinburgh. She") == len(rowling + " She lives in Edinburgh.")
    assert split_ready("Ask Dr. Jones. Or the U.S. Navy. Or", False) == (["Ask Dr. Jones.", "Or the U.S. Navy."], 33)
    assert split_ready("It is in Paris. Yes", False) == (["It is in Paris."], 16)  # a word ending in s is no initial
    assert ends("See e.g. this. Mt. Fuji is tall. No. 5 is MR. Smith. Ok") == [
        "See e.g. this.", "Mt. Fuji is tall.", "No. 5 is MR. Smith."]  # in any case


def test_first_clause_is_short():
    assert first_clause("Sure, the capital of France, as you know, is Paris.", False) == (
        ["Sure, the capital of France,"], 29)
    assert first_clause("It is Paris. Nice", False) == (["It is Paris."], 13)
    assert first_clause("It is", False) == ([], 0) and first_clause("It is", True) == (["It is"], 5)
    # a comma, semicolon or colon after fewer than three words is no clause of its own
    assert first_clause("Well; that is all", False) == ([], 0)
    assert first_clause("Well, well: that is it; more", False) == (["Well, well: that is it;"], 24)


def test_a_sentence_that_ends_the_text_so_far_is_a_first_clause():
    """Its full stop is the last token yet: the reply starts without waiting for the next one."""
    assert first_clause("The capital of France is Paris.", False) == (["The capital of France is Paris."], 31)
    assert first_clause("Is it Paris?", False) == (["Is it Paris?"], 12)
    assert first_clause("Pi is about 3.", False) == ([], 0)  # "3.14" may follow
    assert first_clause("It was J.K.", False) == ([], 0)  # "Rowling" may follow
    assert first_clause("The tallest mountain is Mt.", False) == ([], 0)
    assert first_clause("Well...", False) == ([], 0)  # as the WordMerger holds it: more dots may follow


def test_a_long_first_sentence_starts_at_its_first_phrase():
    """Cut before a word that starts a phrase once three words are in: the words arrive whole
    (the back-end's WordMerger), so that word may be the latest."""
    assert first_clause("The sky is blue during", False) == (["The sky is blue"], 16)
    assert first_clause("William Shakespeare wrote the", False) == (["William Shakespeare wrote"], 26)
    assert first_clause("You should cook a simple meal", False) == (["You should cook"], 16)
    # short sentences and early phrase words stay whole
    assert first_clause("Paris is the capital of France", False) == ([], 0)
    assert first_clause("Paris is the capital of France. It", False) == (["Paris is the capital of France."], 32)
    # "and"/"or" join names too: only after five words; and no cut inside quotes or brackets
    assert first_clause("I like cats and dogs", False) == ([], 0)
    assert first_clause("Salt and pepper go well together and", False) == (["Salt and pepper go well together"], 33)
    assert first_clause('The play "Romeo and Juliet" was written by', False) == (['The play "Romeo and Juliet" was written'], 40)
    assert first_clause("It is (as in the book", False) == ([], 0)
    assert first_clause("The author of the book “Romeo and Juliet” is", False) == ([], 0)
    # an article right after "of" or another phrase word stays with it; "vitamin A" is no article
    assert first_clause("The capital of the country is", False) == ([], 0)
    assert first_clause("Water boils at a temperature of", False) == ([], 0)
    assert first_clause("The best source of vitamin A is", False) == ([], 0)
    # no phrase word in it at all: its first words, once it is long
    streaming = "Mount Everest is approximately 8,848 meters (29,029 feet) tall and"
    assert first_clause(streaming, False) == (["Mount Everest is approximately 8,848"], 37)
    assert first_clause("Mount Everest is approximately 8,848 meters (29,029 feet) tall", False) == ([], 0)


def test_split_ready_waits_for_sentence_ends_unless_done():
    assert split_ready("The capital is Paris. It is", False) == (["The capital is Paris."], 22)
    assert split_ready("The capital is Paris. It is", True) == (["The capital is Paris.", "It is"], 27)
    assert split_ready("no end yet", False) == ([], 0)
    assert split_ready("One.   Two", False) == (["One."], 7)  # the gap after a sentence is used up too
    assert split_ready("One. Two. Three. Four", False, limit=2) == (["One.", "Two."], 10)
    assert split_ready("One. Two. ", True) == (["One.", "Two."], 10)  # trailing space: no empty sentence


def test_a_long_stretch_without_a_sentence_end_is_cut_at_its_last_comma():
    long = "one two three four five six seven eight, nine ten eleven twelve thirteen fourteen"
    sentences, used = split_ready(long, False)
    assert sentences == ["one two three four five six seven eight,"] and long[used:].startswith(" nine")
    assert split_ready("one, two three four five six seven", False) == ([], 0)  # short: waits for its end
    assert split_ready(" ".join(f"w{n}" for n in range(20)), False) == ([], 0)  # no comma: waits too


def test_spoken_length_keeps_two_sentences_within_30_words():
    two = "The capital of France is Paris. It is known for the Eiffel Tower."
    assert spoken_length(two + " It also has") == len(two)
    assert spoken_length("The capital of France is Paris.") is None  # more may come: keep all
    assert spoken_length("The capital of France is Paris. It") is None
    first = "Paris is the capital."
    long_second = " It is a city of " + "many " * 30
    assert spoken_length(first + long_second) == len(first)  # the second would pass 30 words
    assert spoken_length(first + " It is a city of " + "many " * 25 + "museums. More.") == len(first)
    assert spoken_length("word " * 40) is None  # a long first sentence is spoken whole
    assert MAX_WORDS == 30


def test_tts_pieces_are_of_even_length_and_cut_between_words():
    text = " ".join(f"w{n}" for n in range(60))  # 229 characters, no punctuation
    pieces = tts_pieces(text)
    assert [len(p) for p in pieces] == [77, 75, 75]  # three even pieces, no stub of a last one
    assert " ".join(pieces).split() == text.split()  # no word cut, none lost
    assert all(len(p) <= TTS_PIECE_CHARS for p in pieces)
    assert tts_pieces("short one") == ["short one"] and tts_pieces("  ") == []


def test_tts_pieces_cut_at_a_comma_in_the_second_half_of_a_piece():
    late = ("one two three four five six seven eight nine ten, eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen")
    assert tts_pieces(late, 80) == ["one two three four five six seven eight nine ten,",
                                    "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"]
    early = "one, " + late[4:].replace(",", "")  # a comma too early in the piece: cut at a space
    assert tts_pieces(early, 80) == ["one, two three four five six seven eight nine ten eleven twelve",
                                     "thirteen fourteen fifteen sixteen seventeen eighteen nineteen"]


def test_a_word_longer_than_a_piece_is_cut_inside_it():
    assert tts_pieces("x" * 250) == ["x" * 84, "x" * 83, "x" * 83]


def test_word_schedule_spreads_words_over_the_audio():
    schedule = word_schedule("Hi there friend", 1500)
    assert [p for _, p in schedule] == [" Hi", " there", " friend"]
    offsets = [o for o, _ in schedule]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < 1500
    assert word_schedule("a bb", 1000) == [(0, " a"), (400, " bb")]  # by characters: "a " is 2 of 5
    assert word_schedule("", 1000) == []
