"""Where a streaming answer may be cut for the lite front-end's voice: pure text functions.

The answer arrives a few words at a time; speech starts on its first short clause, goes on
sentence by sentence, and stops after what fits a spoken reply (`spoken_length`). A full stop
after an initial or an abbreviation ends no sentence, a long stretch without a sentence end is
cut at its last comma, and a sentence too long for one Piper call goes to it in pieces of whole
words (`tts_pieces`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TEXT_ENDS_SENTENCE = re.compile(r"(?:[!?]|(?<![\d.])\.)$")  # as the back-end's WordMerger passes it on
# A full stop after these ends no sentence: "J.K. Rowling", "Dr. Jones", "the U.S. Navy".
_INITIALS = re.compile(r"(?:\b[A-Za-z]\.)+$")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "mt.", "jr.", "sr.", "prof.", "vs.", "e.g.", "i.e.",
                            "approx.", "no."})
# The longest text one Piper call gets: its memory grows steeply with the text (600 characters
# took it from 181 MB to 1.6 GB), so a long stretch without punctuation is spoken in pieces cut
# at word boundaries; 100 characters is a sentence of ~17 words (measured: an unpunctuated
# 1,150-character answer peaked at 920 MB in 600-character calls, 280 MB in these, 195 MB for a
# two-sentence answer).
TTS_PIECE_CHARS = 100
_LONG_CLAUSE_WORDS = 14  # speak a long unpunctuated stretch at its last comma rather than wait
MAX_SENTENCES = 2
MAX_WORDS = 30  # the prompt's length for a spoken answer

_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_FIRST_CLAUSE_WORDS = 3
# A first sentence with no comma yet is cut before a word that starts a phrase, once it has this
# many words: the reply's first sound then waits for a few words, not the whole sentence. Each
# word is ~65 ms of the 1.5B's writing and ~20 ms of Piper's (on two cores): "William Shakespeare
# wrote | the play Romeo and Juliet." starts five words sooner than whole. Short sentences
# ("Paris is the capital of France.") stay whole.
_FIRST_PHRASE_WORDS = 3
_PHRASE_STARTS = frozenset({"because", "but", "so", "which", "that", "when", "where", "while", "who", "with", "in",
                            "on", "at", "for", "from", "by", "to", "as", "than", "during", "about", "into", "like",
                            "after", "before", "between", "around"})
# An article (lower case: "vitamin A" is none) starts a phrase too, unless the word before it
# does ("of | the", "at | a"): that phrase began there.
_ARTICLES = frozenset({"the", "a", "an"})
_ARTICLE_TAKERS = _PHRASE_STARTS | {"of"}
# "and" and "or" also join the words of a name ("Romeo and Juliet"): a cut before them only
# after more words.
_JOINER_WORDS = 5
_JOINERS = frozenset({"and", "or"})
# …and one with no phrase word either ("Mount Everest is approximately 8,848 meters (29,029 feet)
# tall.": a 1.3 s synthesis before any sound) at its first _FIRST_CUT_WORDS words, once it has
# _FIRST_MAX_WORDS.
_FIRST_CUT_WORDS = 5
_FIRST_MAX_WORDS = 9


def sentence_ends(text: str) -> Iterator[re.Match[str]]:
    """The gaps after the sentences of `text` (a match spans the whitespace), abbreviations and
    initials excepted."""
    for match in _SENTENCE_END.finditer(text):
        before = text[: match.start()]
        word = before[before.rfind(" ") + 1 :]
        if before.endswith(".") and (_INITIALS.search(word) or word.lower() in _ABBREVIATIONS):
            continue
        yield match


def first_clause(text: str, done: bool) -> tuple[list[str], int]:
    """The opening clause of an answer (up to its first , ; : or sentence end, at least a few
    words, or of a long sentence its first phrase or first words): short, so the reply can start
    as soon as possible."""
    for match in _CLAUSE_END.finditer(text):
        if len(text[: match.start()].split()) >= _FIRST_CLAUSE_WORDS:
            return [text[: match.start()].strip()], match.end()
    sentences, used = split_ready(text, done, limit=1)
    if sentences:
        return sentences, used
    # A sentence end at the end of the text so far ends it too: the model's next token would
    # only confirm it (its end of answer: a token's time, and the frame after), unless the full
    # stop follows a digit ("3." of "3.14") or another dot.
    if _TEXT_ENDS_SENTENCE.search(text) and next(sentence_ends(text + " "), None):
        return [text.strip()], len(text)
    # The words come whole (the back-end's WordMerger passes a word on when the next begins),
    # so the latest may be where the cut goes.
    words = list(re.finditer(r"\S+", text))
    for n, word in enumerate(words[_FIRST_PHRASE_WORDS:_FIRST_MAX_WORDS], _FIRST_PHRASE_WORDS):
        starts = word.group().lower()
        if word.group() in _ARTICLES:
            phrase = words[n - 1].group().lower() not in _ARTICLE_TAKERS
        else:
            phrase = starts in _PHRASE_STARTS or (starts in _JOINERS and n >= _JOINER_WORDS)
        if phrase and _outside_quotes(text[: word.start()]):
            return [text[: word.start()].strip()], word.start()
    if len(words) > _FIRST_MAX_WORDS:
        cut = words[_FIRST_CUT_WORDS].start()
        return [text[:cut].strip()], cut
    return [], 0


def _outside_quotes(text: str) -> bool:
    """No quote or bracket is open at the end of `text`: a cut there leaves no title or aside
    in two pieces."""
    return text.count('"') % 2 == 0 and text.count("“") <= text.count("”") and text.count("(") <= text.count(")")


def spoken_length(text: str) -> int | None:
    """Where the spoken part of a streaming answer ends, once that is known: after its second
    sentence, or after its first when the second would take it past MAX_WORDS (the first is
    always spoken whole). None: not known yet, keep all of it."""
    ends = [m.start() for m in islice(sentence_ends(text), MAX_SENTENCES)]
    if not ends:
        return None
    if len(ends) == MAX_SENTENCES and len(text[: ends[1]].split()) <= MAX_WORDS:
        return ends[1]
    if len(ends) == MAX_SENTENCES or len(text.split()) > MAX_WORDS:
        return ends[0]
    return None


def split_ready(text: str, done: bool, limit: int | None = None) -> tuple[list[str], int]:
    """Complete sentences at the start of `text` (at most `limit`) and how many characters they
    use; with `done`, the rest counts as a sentence too."""
    sentences, used = [], 0
    for match in sentence_ends(text):
        sentences.append(text[used : match.start()].strip())
        used = match.end()
        if limit is not None and len(sentences) >= limit:
            return sentences, used
    rest = text[used:]
    if done and rest.strip():
        sentences.append(rest.strip())
        used = len(text)
    elif len(rest.split()) >= _LONG_CLAUSE_WORDS and "," in rest:
        cut = rest.rindex(",") + 1
        sentences.append(rest[:cut].strip())
        used += cut
    return [s for s in sentences if s], used


def tts_pieces(sentence: str, limit: int | None = None) -> list[str]:
    """`sentence` in pieces of at most `limit` (TTS_PIECE_CHARS) characters, of about even
    length, cut at word boundaries (at a comma where one is in the second half of a piece); a
    single word longer than `limit` is cut inside it."""
    limit = limit or TTS_PIECE_CHARS
    pieces, rest = [], sentence.strip()
    while len(rest) > limit:
        share = -(-len(rest) // -(-len(rest) // limit))  # an even share: no stub of a last piece
        reach = rest[: share + 1]
        cut = reach.rfind(", ") + 1
        if cut <= share // 2:
            cut = reach.rfind(" ")
        if cut <= 0:
            cut = share
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return [*pieces, rest] if rest else pieces


def word_schedule(sentence: str, samples: int) -> list[tuple[int, str]]:
    """When each word starts in the sentence's audio, spread by character count."""
    words = sentence.split()
    total = sum(len(w) + 1 for w in words)
    schedule, chars = [], 0
    for word in words:
        schedule.append((samples * chars // max(total, 1), " " + word))
        chars += len(word) + 1
    return schedule
