"""How much of a model's CoSQA score comes from the docstrings inside CoSQA's code.

Training pairs from `cpt pairs code` take a function's docstring as x and its code without
that docstring as y; CoSQA's documents keep their docstrings. This scores each model on
CoSQA's test queries twice, against the code as given and against the same functions with
their docstrings removed (tree-sitter, as `cpt pairs code` removes them), so that a drop
after training can be split into what the docstrings carried and the rest.

    python experiments/cosqa_docstrings.py --models default runs/curation/runs/raw-seed0/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cpt_embed.atomic import atomic_file
from cpt_embed.data.code_pairs import extract_functions
from cpt_embed.eval.data import find_data_dir, load_beir
from cpt_embed.eval.metrics import ranking_metrics
from cpt_embed.eval.topk import exact_topk
from cpt_embed.model.encoder import Encoder

COSQA = "code_search/cosqa"
DEPTH = 100


def without_docstring(code: str) -> str:
    """`code` with the docstring of the function it starts with removed; as given where it
    does not start with a documented Python function or does not parse."""
    functions, _ = extract_functions(code.encode("utf-8"), "python")
    first_line = code.lstrip("\n").split("\n", 1)[0].strip()
    for function in functions:  # the outermost first: tree-sitter's pre-order
        if function.code.split("\n", 1)[0].strip() == first_line:
            return function.code
    return code


def ndcg_at_10(encoder: Encoder, queries: list[str], corpus: list[str], data) -> float:
    """nDCG@10 (x 100) of `queries` against `corpus` (aligned with data.corpus_ids)."""
    q = encoder.encode(queries, side="query")
    d = encoder.encode(corpus, side="document")
    scores, index = exact_topk(q, d, DEPTH)
    run = {
        qid: {data.corpus_ids[i]: float(s) for s, i in zip(row_s, row_i, strict=True)}
        for qid, row_s, row_i in zip(data.query_ids, scores, index, strict=True)
    }
    return ranking_metrics(run, data.qrels)["ndcg@10"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--data", type=Path, help=f"BEIR folder (default: the data dir's {COSQA})")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    data = load_beir(args.data or find_data_dir() / COSQA, "test")
    stripped = [without_docstring(text) for text in data.corpus_texts]
    changed = sum(a != b for a, b in zip(stripped, data.corpus_texts, strict=True))
    print(f"docstrings removed from {changed:,} of {len(stripped):,} documents", file=sys.stderr)
    rows = {}
    for model in args.models:
        encoder = Encoder.load(model, max_length=args.max_length)
        rows[model] = {
            "as given": ndcg_at_10(encoder, data.query_texts, data.corpus_texts, data),
            "docstrings removed": ndcg_at_10(encoder, data.query_texts, stripped, data),
        }
    print("| model | nDCG@10, code as given | docstrings removed | difference |")
    print("|---|---:|---:|---:|")
    for model, row in rows.items():
        given, removed = row["as given"], row["docstrings removed"]
        print(f"| {model} | {given:.2f} | {removed:.2f} | {removed - given:+.2f} |")
    result = {"documents_changed": changed, "documents": len(stripped), "models": rows}
    if args.json:
        with atomic_file(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
