"""The texts of evaluation sets, which mining holds out of its training pairs. They are read
with the loaders of `eval.data`, so what is held out is what evaluation reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from cpt_embed.errors import InputError, missing_path
from cpt_embed.eval.data import load_classification, load_passages, load_sts

# The kinds of evaluation set in ../shared/data whose texts text pairs must not contain.
TEXT_KINDS = ("sts", "classification", "retrieval", "code_search")
# The code-search sets of ../shared/data and their language.
EVAL_CODE_SETS = {"code_search/cosqa": "python", "code_search/codesearchnet_ruby": "ruby"}


def _beir_texts(folder: Path) -> Iterator[str]:
    """Corpus and queries: each title + text, and the text alone where there is a title."""
    for name in ("corpus.jsonl", "queries.jsonl"):
        if (folder / name).is_file():
            for passage in load_passages(folder / name):
                yield passage.full_text
                if passage.title and passage.text:
                    yield passage.text


def _set_texts(path: Path) -> Iterator[str]:
    """Texts of an evaluation set: a BEIR folder, a classification JSONL (text, or text1 and
    text2), an STS TSV (both sentences), or a folder holding any of these."""
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        yield from _beir_texts(path)
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_dir() and child.name != "qrels" or child.suffix in (".jsonl", ".tsv"):
                yield from _set_texts(child)
    elif path.suffix == ".jsonl":
        split = load_classification(path)
        yield from split.texts or []
        if split.pairs:
            yield from split.pairs[0] + split.pairs[1]
    elif path.suffix == ".tsv":
        pairs = load_sts(path)
        yield from pairs.sentences1 + pairs.sentences2
    else:
        raise InputError(f"{path}: --exclude takes a BEIR folder, .jsonl, .tsv or a folder")


def held_out_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Every text of the given evaluation sets (see `held_out_text_sets`)."""
    for path in paths:
        if not path.exists():
            raise missing_path(path)
        yield from _set_texts(path)


def held_out_code(sets: Iterable[tuple[Path, str | None]]) -> Iterator[tuple[str, str]]:
    """(language, text) of the code and queries of the given (set, language) pairs; the
    language is "" where unknown."""
    for path, language in sets:
        for text in held_out_texts([path]):
            yield language or "", text


def held_out_text_sets(data_dir: Path | None) -> list[Path]:
    """Every evaluation set of a data dir laid out as ../shared/data: each STS,
    classification, retrieval and code-search folder."""
    if data_dir is None:
        return []
    return sorted(
        path
        for kind in TEXT_KINDS
        if (data_dir / kind).is_dir()
        for path in (data_dir / kind).iterdir()
        if path.is_dir()
    )


def held_out_code_sets(data_dir: Path | None) -> list[tuple[Path, str]]:
    """(folder, language) of the code-search sets of a data dir laid out as ../shared/data."""
    if data_dir is None:
        return []
    return [
        (data_dir / rel, lang) for rel, lang in EVAL_CODE_SETS.items() if (data_dir / rel).is_dir()
    ]
