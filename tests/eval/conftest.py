"""A small copy of the real evaluation data (same layouts, fewer records) for fast task tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cpt_embed.eval.classification import PROBES
from cpt_embed.eval.retrieval import RETRIEVAL_SOURCES
from cpt_embed.eval.sts import STS_SOURCES


def _head_lines(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as handle:
        lines = [line for _, line in zip(range(n), handle, strict=False)]
    dst.write_text("".join(lines), encoding="utf-8")


def _copy_beir(src: Path, dst: Path, n_queries: int, n_docs: int) -> None:
    (dst / "qrels").mkdir(parents=True)
    lines = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    queries = list(dict.fromkeys(r[0] for r in rows))[:n_queries]
    kept = [r for r in rows if r[0] in queries]
    (dst / "qrels" / "test.tsv").write_text(
        "\n".join([header] + ["\t".join(r) for r in kept]) + "\n", encoding="utf-8"
    )
    judged = {r[1] for r in kept}
    with open(src / "corpus.jsonl", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    chosen = [d for d in docs if d["_id"] in judged]
    chosen += [d for d in docs if d["_id"] not in judged][: max(0, n_docs - len(chosen))]
    (dst / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in chosen), encoding="utf-8"
    )
    with open(src / "queries.jsonl", encoding="utf-8") as handle:
        all_queries = [json.loads(line) for line in handle]
    (dst / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in all_queries if q["_id"] in queries), encoding="utf-8"
    )


@pytest.fixture(scope="session")
def mini_data(shared_data, tmp_path_factory) -> Path:
    """Every task's files, cut to a few hundred records (folds, dev splits and qrels kept)."""
    root = tmp_path_factory.mktemp("mini-data")
    for relative in STS_SOURCES.values():
        src = shared_data / relative
        files = [src] if src.suffix == ".tsv" else sorted(src.glob("*.tsv"))
        for path in files:
            # all.tsv must hold every subset's pairs: keep it whole for the small STS1x sets
            n = 10_000 if path.name == "all.tsv" else 60
            _head_lines(path, root / path.relative_to(shared_data), n)
        if src.suffix != ".tsv":
            subsets = [p for p in files if p.name != "all.tsv"]
            pooled = ["score\tsentence1\tsentence2\n"] + [
                line
                for p in subsets
                for line in (root / p.relative_to(shared_data))
                .read_text("utf-8")
                .splitlines(True)[1:]
            ]
            (root / src.relative_to(shared_data) / "all.tsv").write_text("".join(pooled), "utf-8")
    for task in PROBES:
        src = shared_data / "classification" / task
        for path in src.glob("*.jsonl"):
            with open(path, encoding="utf-8") as handle:
                records = [json.loads(line) for line in handle]
            # keep records of every fold and label: a stride through the file
            step = max(1, len(records) // 300)
            out = root / path.relative_to(shared_data)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r) + "\n" for r in records[::step]), "utf-8")
        shutil.copy(src / "labels.json", root / "classification" / task / "labels.json")
    for relative, _ in RETRIEVAL_SOURCES.values():
        _copy_beir(shared_data / relative, root / relative, n_queries=25, n_docs=300)
    return root
