"""Passage splitting, neighbour pairing and the text filters."""

from __future__ import annotations

import numpy as np
import pytest

from cpt_embed.data.text_pairs import PassageSplitter, TextFilter, neighbour_pairs, prose_ratio


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _sentence(i: int, n: int = 9) -> str:
    return f"Sentence number {i} " + " ".join(["word"] * (n - 4)) + " end."


def test_paragraphs_are_packed_up_to_the_budget():
    paragraphs = [" ".join([f"p{i}"] * 10) for i in range(6)]
    splitter = PassageSplitter(words, max_tokens=25)
    passages = splitter.split("\n\n".join(paragraphs))
    assert [n for _, n in passages] == [20, 20, 20]
    assert passages[0][0] == paragraphs[0] + "\n" + paragraphs[1]


def test_single_newlines_separate_paragraphs_when_there_are_no_blank_lines():
    passages = PassageSplitter(words, max_tokens=10).split("a b c d e f\ng h i j k l")
    assert [p for p, _ in passages] == ["a b c d e f", "g h i j k l"]


def test_long_paragraphs_split_on_sentences_and_long_sentences_on_words():
    paragraph = " ".join(_sentence(i) for i in range(10))
    passages = PassageSplitter(words, max_tokens=20).split(paragraph)
    assert all(n <= 20 for _, n in passages)
    assert passages[0][0].startswith("Sentence number 0") and passages[0][0].endswith("end.")
    giant = " ".join(f"w{i}" for i in range(95))
    pieces = PassageSplitter(words, max_tokens=20).split(giant)
    assert all(n <= 20 for _, n in pieces)
    assert " ".join(p for p, _ in pieces).split() == giant.split()


def test_neighbour_pairs_window_stride_and_cap():
    passages = [(str(i), 1) for i in range(10)]
    rng = np.random.default_rng(0)
    assert neighbour_pairs(passages, window=1, stride=2, max_pairs=0, rng=rng) == [
        (0, 1),
        (2, 3),
        (4, 5),
        (6, 7),
        (8, 9),
    ]
    assert neighbour_pairs(passages, window=3, stride=3, max_pairs=0, rng=rng) == [
        (0, 3),
        (3, 6),
        (6, 9),
    ]
    capped = neighbour_pairs(
        passages, window=1, stride=1, max_pairs=4, rng=np.random.default_rng(7)
    )
    assert len(capped) == 4 and capped == sorted(capped)
    again = neighbour_pairs(passages, window=1, stride=1, max_pairs=4, rng=np.random.default_rng(7))
    assert again == capped
    assert neighbour_pairs(passages[:1], window=1, stride=1, max_pairs=0, rng=rng) == []


PROSE = (
    "The river flows through the old town and past the mill where the farmers "
    "bring their grain every autumn before the first frost arrives in the valley."
)
OTHER = (
    "Scholars have long debated the origin of the bridge, which appears in a charter "
    "of the twelfth century and again in the tax rolls of a much later king."
)


@pytest.mark.parametrize(
    "x, y, reason",
    [
        ("Too short here.", OTHER, "too_short"),
        (
            "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 |",
            OTHER,
            "not_prose",
        ),
    ],
)
def test_filters_name_their_reason(x, y, reason):
    text_filter = TextFilter(min_tokens=16)
    assert text_filter.reason(x, len(x.split()), y, len(y.split())) == reason


def test_exact_and_near_duplicates_and_held_out():
    text_filter = TextFilter(min_tokens=5)
    n = len(PROSE.split())
    assert text_filter.keep(PROSE, n, OTHER, len(OTHER.split()))
    assert text_filter.reason(PROSE.upper(), n, "x " * 20, 20) == "duplicate"
    fresh = TextFilter(min_tokens=5)
    vocabulary = [a + b + c for a in "bdklmnprst" for b in "aeiou" for c in ("n", "r", "s", "")]
    long_x, long_y = " ".join(vocabulary[:100]), " ".join(vocabulary[100:200])
    assert fresh.keep(long_x, 100, long_y, 100)
    near_x = long_x.replace(vocabulary[50], "changed")  # one word of 200 in each side
    near_y = long_y.replace(vocabulary[150], "altered")
    assert fresh.reason(near_x, 100, near_y, 100) == "near_duplicate"
    from cpt_embed.data.code_pairs import normalized_hash

    held = TextFilter(min_tokens=5, held_out={normalized_hash(OTHER)})
    assert held.reason(PROSE, n, OTHER, n) == "in_evaluation_set"
    assert text_filter.counts["kept"] == 1


def test_prose_ratio():
    assert prose_ratio("plain words only") == 1.0
    assert prose_ratio("{}[]()<>|") == 0.0
    assert prose_ratio("") == 0.0
