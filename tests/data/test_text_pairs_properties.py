"""Properties of the passage splitter on generated documents: passages keep every word in
order, are never empty, keep to the token budget (a single longer word excepted) and report
their token counts, whatever the text and however unevenly the tokenizer counts words."""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cpt_embed.data.text_pairs import PassageSplitter

SETTINGS = settings(max_examples=300, deadline=None, database=None)


def words(texts: list[str]) -> list[int]:
    """Tokens as whitespace-separated words: additive, so passage counts are exact."""
    return [len(t.split()) for t in texts]


def uneven(texts: list[str]) -> list[int]:
    """About one token per 4 characters of each word, so long words weigh more."""
    return [sum(len(w) // 4 + 1 for w in t.split()) for t in texts]


piece = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=15),
    st.sampled_from(
        [". ", "! ", "? ", "End.", '"Quoted."', "(Aside.)", "Next", "A", "9", "\n", "\n\n"]
    ),
    st.sampled_from([" \n \n", "\r\n", "\t", "。", "x" * 70]),
)
document = st.lists(piece, max_size=80).map(" ".join)
counters = st.sampled_from([words, uneven])
budgets = st.integers(1, 40)


def _split(
    document: str, counter: Callable[[list[str]], list[int]], budget: int
) -> list[tuple[str, int]]:
    passages = PassageSplitter(counter, max_tokens=budget).split(document)
    assert PassageSplitter(counter, max_tokens=budget).split(document) == passages
    return passages


@SETTINGS
@given(document=document, counter=counters, budget=budgets)
@example(document='He said "Stop." Then he left.', counter=words, budget=4)
def test_passages_keep_every_word_in_order(document, counter, budget):
    passages = _split(document, counter, budget)
    assert " ".join(p for p, _ in passages).split() == document.split()
    assert all(p and p == p.strip() for p, _ in passages)


@SETTINGS
@given(document=document, counter=counters, budget=budgets)
@example(document="x" * 70 + " 0 0 0", counter=uneven, budget=9)
def test_passages_keep_to_the_budget_unless_one_word(document, counter, budget):
    for passage, tokens in _split(document, counter, budget):
        assert tokens <= budget or len(passage.split()) == 1
        if counter is words:
            assert tokens == len(passage.split())


@SETTINGS
@given(
    sentences=st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["", '"', ")", "')"])), min_size=1
    ),
    budget=st.integers(8, 40),
)
def test_sentences_that_fit_the_budget_are_never_cut(sentences, budget):
    """A paragraph over the budget is cut between sentences (closing quotes and brackets
    stay with theirs) when each sentence fits."""
    texts = [f"Sentence{i} " + "w " * n + f"end.{close}" for i, (n, close) in enumerate(sentences)]
    passages = _split(" ".join(texts), words, budget)
    sentence_ends = set(accumulate(len(t.split()) for t in texts))
    assert set(accumulate(len(p.split()) for p, _ in passages)) <= sentence_ends
