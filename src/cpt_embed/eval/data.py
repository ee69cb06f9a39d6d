"""Loaders of the evaluation layouts of ../shared/data: STS TSV, classification JSONL, BEIR.

Every loader names the file in its errors; none guesses a missing split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cpt_embed.checksums import sha256_of
from cpt_embed.data.jsonl import read_jsonl
from cpt_embed.errors import InputError, missing_path, reading

DATA_ENV = "CPT_DATA"


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The evaluation data folder: `explicit`, else $CPT_DATA, else ../shared/data beside the
    current folder or beside this checkout."""
    if explicit is not None or os.environ.get(DATA_ENV):
        path = Path(explicit if explicit is not None else os.environ[DATA_ENV]).expanduser()
        if not path.is_dir():
            found = "not a folder" if path.exists() else "not found"
            raise InputError(f"data dir {path}: {found}; pass --data DIR or set {DATA_ENV}")
        return path
    checkout = Path(__file__).resolve().parents[3]
    for candidate in (Path.cwd().parent / "shared" / "data", checkout.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"no evaluation data found in ../shared/data; pass --data DIR or set {DATA_ENV}"
    )


def _require(path: Path) -> Path:
    if not path.is_file():
        if path.is_symlink():
            raise missing_path(path, "data file")
        raise InputError(f"{path}: missing; the data dir must follow ../shared/data/README.md")
    return path


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Errors from reading `path` (encoding, damage, permissions) as one naming it."""
    with reading(path):
        try:
            yield
        except csv.Error as err:
            raise InputError(f"{path}: not a TSV file as expected ({err})") from None


class Checksums:
    """sha256 of each data file read, so a report can say exactly which data it used."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def add(self, path: Path) -> Path:
        if str(path) not in self.files:
            self.files[str(path)] = sha256_of(path)
        return path

    def combined(self) -> str:
        """One sha256 over all files' digests, in name order."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(f"{Path(name).name}:{self.files[name]}\n".encode())
        return digest.hexdigest()


def _jsonl(path: Path) -> list[dict]:
    return [record for _, record in read_jsonl(_require(path))]


def _field(record: dict, name: str, path: Path, number: int):
    if name not in record:
        raise InputError(f"{path}: record {number} has no field {name!r}")
    return record[name]


def _text(record: dict, name: str, path: Path, number: int) -> str:
    value = _field(record, name, path, number)
    if not isinstance(value, str):
        raise InputError(
            f"{path}: record {number} field {name!r} is {type(value).__name__}, not a string"
        )
    return value


@dataclass
class STSPairs:
    """Sentence pairs with gold similarity scores."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def load_sts(path: Path, checksums: Checksums | None = None) -> STSPairs:
    """A `score<TAB>sentence1<TAB>sentence2` file (header row, no quoting)."""
    _require(path)
    s1, s2, scores = [], [], []
    with _reading(path), open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["score", "sentence1", "sentence2"]:
            raise InputError(f"{path}: header must be score, sentence1, sentence2; got {header}")
        for number, row in enumerate(reader, start=2):
            if len(row) != 3:
                raise InputError(f"{path}: line {number} has {len(row)} columns, expected 3")
            try:
                score = float(row[0])
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise InputError(f"{path}: line {number} score {row[0]!r} is not a number")
            scores.append(score)
            s1.append(row[1])
            s2.append(row[2])
    if not scores:
        raise InputError(f"{path}: no sentence pairs")
    if checksums:
        checksums.add(path)
    return STSPairs(s1, s2, scores)


@dataclass
class Classification:
    """One split of a classification set: single texts or text pairs, with int labels."""

    texts: list[str] | None
    pairs: tuple[list[str], list[str]] | None
    labels: list[int]
    folds: list[int] | None = None


def load_classification(path: Path, checksums: Checksums | None = None) -> Classification:
    """A JSONL split with `text` (or `text1`/`text2`) and `label`, optionally `fold`."""
    records = _jsonl(path)
    if checksums:
        checksums.add(path)
    if not records:
        raise InputError(f"{path}: no records")
    paired = "text1" in records[0]
    labels, folds = [], []
    texts, left, right = [], [], []
    for number, record in enumerate(records, start=1):
        label = _field(record, "label", path, number)
        if not isinstance(label, int) or isinstance(label, bool):
            raise InputError(f"{path}: record {number} label {label!r} is not an integer")
        labels.append(label)
        if paired:
            left.append(_text(record, "text1", path, number))
            right.append(_text(record, "text2", path, number))
        else:
            texts.append(_text(record, "text", path, number))
        folds.append(record.get("fold"))
    has_folds = all(f is not None for f in folds)
    return Classification(
        texts=None if paired else texts,
        pairs=(left, right) if paired else None,
        labels=labels,
        folds=folds if has_folds else None,
    )


def load_label_names(folder: Path) -> dict[int, str]:
    """labels.json: label id -> name."""
    path = _require(folder / "labels.json")
    with _reading(path):
        text = path.read_text(encoding="utf-8")
    try:
        return {int(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError, RecursionError) as err:
        raise InputError(f"{path}: not a JSON object of label id -> name ({err})") from None


@dataclass
class BEIR:
    """A retrieval set in the BEIR layout, restricted to the queries judged in one split."""

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query-id -> {corpus-id: score} from a BEIR qrels TSV (header row)."""
    qrels: dict[str, dict[str, int]] = {}
    with _reading(path), open(_require(path), encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise InputError(f"{path}: header must be query-id, corpus-id, score; got {header}")
        for number, row in enumerate(reader, start=2):
            if len(row) < 3:
                raise InputError(f"{path}: line {number} has {len(row)} columns, expected 3")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
            except (ValueError, OverflowError):
                raise InputError(
                    f"{path}: line {number} score {row[2]!r} is not a number"
                ) from None
    return qrels


@dataclass(frozen=True)
class Passage:
    """A record of a BEIR corpus.jsonl or queries.jsonl."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """The title joined to the text, as retrieval embeds a document."""
        return f"{self.title} {self.text}" if self.title else self.text


def load_passages(path: Path) -> list[Passage]:
    """The records of a BEIR corpus.jsonl or queries.jsonl: `_id`, `text`, `title` if any."""
    return [
        Passage(
            str(_field(record, "_id", path, number)),
            _text(record, "text", path, number),
            str(record.get("title") or ""),
        )
        for number, record in enumerate(_jsonl(path), start=1)
    ]


def load_beir(folder: Path, split: str = "test", checksums: Checksums | None = None) -> BEIR:
    """Corpus (title + " " + text), the queries judged in qrels/<split>.tsv, and the qrels."""
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = load_qrels(qrels_path)
    corpus = load_passages(corpus_path)
    queries = {query.id: query.text for query in load_passages(queries_path)}
    if checksums:
        for path in (corpus_path, queries_path, qrels_path):
            checksums.add(path)
    corpus_ids = [doc.id for doc in corpus]
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InputError(f"{qrels_path}: query {missing[0]!r} is not in {queries_path}")
    known = set(corpus_ids)
    unknown = [d for judged in qrels.values() for d in judged if d not in known]
    if unknown:
        raise InputError(f"{qrels_path}: document {unknown[0]!r} is not in {corpus_path}")
    query_ids = [q for q in queries if q in qrels]
    return BEIR(
        corpus_ids,
        [doc.full_text for doc in corpus],
        query_ids,
        [queries[q] for q in query_ids],
        qrels,
    )
