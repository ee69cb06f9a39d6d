"""How much of a model's CoSQA score comes from the docstrings inside CoSQA's code.

Training pairs from `cpt pairs code` take a function's docstring as x and its code without
that docstring as y; CoSQA's documents keep their docstrings. This writes CoSQA's test set
again with each function's docstring removed (tree-sitter, as `cpt pairs code` removes it)
as a task folder of its own, then runs each model through the evaluation suite on both
(`cpt eval`'s code path: the figures of `cpt eval --tasks cosqa,OUT/cosqa-no-docstrings`),
so that a drop after training can be split into what the docstrings carried and the rest.

    python experiments/cosqa_docstrings.py --models default runs/curation/runs/raw-seed0/model
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cpt_embed.atomic import atomic_file
from cpt_embed.data.code_pairs import extract_functions
from cpt_embed.eval.context import Task
from cpt_embed.eval.data import find_data_dir, load_beir
from cpt_embed.eval.suite import evaluate
from cpt_embed.model.encoder import Encoder

COSQA = "code_search/cosqa"
STRIPPED = "cosqa-no-docstrings"


def without_docstring(code: str) -> str:
    """`code` with the docstring of the Python function it consists of removed; as given
    where it is not one whole documented function (code before or after it, a decorator)
    or does not parse."""
    body = code.strip("\n")
    functions, _ = extract_functions(body.encode("utf-8"), "python")
    lines = body.count("\n") + 1
    for function in functions:  # the outermost first: tree-sitter's pre-order
        if (function.start_line, function.end_line) == (1, lines):
            return function.code
    return code


def write_stripped(source: Path, out: Path) -> tuple[int, int]:
    """`source`'s BEIR set at `out` with docstrings removed from its documents, its queries,
    qrels and task kind as they are; (documents changed, documents)."""
    data = load_beir(source, "test")
    rows, changed = [], 0
    for doc_id, text in zip(data.corpus_ids, data.corpus_texts, strict=True):
        stripped = without_docstring(text)
        changed += stripped != text
        rows.append({"_id": doc_id, "title": "", "text": stripped})
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    for name in ("queries.jsonl", "qrels/test.tsv"):
        with atomic_file(out / name, "w") as handle:
            handle.write((source / name).read_text(encoding="utf-8"))
    with atomic_file(out / "task.json", "w") as handle:
        json.dump({"kind": "code", "split": "test"}, handle)
    return changed, len(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--labels", nargs="+", help="a name per model for the table and JSON")
    parser.add_argument("--data", type=Path, help=f"BEIR folder (default: the data dir's {COSQA})")
    parser.add_argument("--out", type=Path, default=Path("runs/cosqa-docstrings"))
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    labels = args.labels or args.models
    if len(labels) != len(args.models):
        parser.error(f"--labels names {len(labels)} models, --models gives {len(args.models)}")
    source = args.data or find_data_dir() / COSQA
    if not (source / "corpus.jsonl").is_file():
        parser.error(f"{source} has no corpus.jsonl; give a BEIR folder with --data")
    changed, total = write_stripped(source, args.out / STRIPPED)
    print(f"docstrings removed from {changed:,} of {total:,} documents", file=sys.stderr)
    tasks = [Task.from_folder(source.resolve()), Task.from_folder((args.out / STRIPPED).resolve())]
    rows = {}
    for label, model in zip(labels, args.models, strict=True):
        encoder = Encoder.load(model, max_length=args.max_length)
        report = evaluate(encoder, tasks, source.parent, cache_dir=None)
        scores = {r.task: r.scores["ndcg@10"] for r in report.results}
        given, removed = scores[tasks[0].name], scores[tasks[1].name]
        rows[label] = {"as given": given, "docstrings removed": removed}
    print("| model | nDCG@10, code as given | docstrings removed | difference |")
    print("|---|---:|---:|---:|")
    for label, row in rows.items():
        given, removed = row["as given"], row["docstrings removed"]
        print(f"| {label} | {given:.2f} | {removed:.2f} | {removed - given:+.2f} |")
    words = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "experiments/cosqa_docstrings.py", *words])
    result = {"command": command, "documents_changed": changed, "documents": total, "models": rows}
    if args.json:
        with atomic_file(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
