"""Deletion curves of similarity explanations, and the time of one explanation.

    python benchmarks/explain.py [--model default] [--model runs/demo/smollm2-code/model]
        [--pairs 100] [--methods lig lig:0:8 grad_input occlusion] [--latency-runs 20]
        [--json FILE]

For each model, data set and method: the document's k most attributed text tokens are
removed from its token ids (the sequence closes up; special tokens and delimiters stay) and
the document embedded again (float32); the table gives the mean drop of its cosine to the
query, at k = 1 token and 5, 10 and 20% of the document's text tokens (at least 1).
Against them: `random` (k random tokens, mean of 5 draws) and `attention` (the k tokens
receiving the most attention, averaged over layers, heads and the positions the model
pools: every real token for mean pooling, the eos/cls token otherwise). Candidates:
`lig[:LAYER[:STEPS[:DTYPE]]]` (layer integrated gradients as `Encoder.explain` computes
them; `lig` alone: its defaults), `grad_input` (gradient x input at the token embeddings)
and `occlusion` (each token's own removal, one forward pass per token: the reference, too
slow to serve). For `lig` the table adds the median gap between the scores' sum and the
cosine's change along the path, relative to that change (completeness).

Data: the first --pairs CoSQA test queries with their relevant function (document side),
and --pairs STS-B test pairs spread through the file (both texts on the query side, as
evaluation embeds them); --pairs 0 skips them. torch on 2 threads. Latency: each `lig`
method's `Encoder.explain` of a query and the first CoSQA function that fills 256 tokens
(or the model's max_length), on 2 threads and on 1; --latency-runs 0 skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cpt_embed import Encoder
from cpt_embed.eval.data import find_data_dir, load_beir, load_sts
from cpt_embed.model import attribution
from cpt_embed.model.config import Side
from cpt_embed.model.explain import (
    DEFAULT_STEPS,
    SideTokens,
    default_layer,
    layer_count,
    side_tokens,
)
from cpt_embed.model.runtime.devices import to_dtype

DATA = find_data_dir()  # $CPT_DATA, else ../shared/data
THREADS = 2
KS = ("1", "5%", "10%", "20%")
RANDOM_DRAWS = 5
BATCH = 64
METHODS = ("lig", "lig:0:8", "grad_input", "occlusion")

Pair = tuple[str, str]


def cosqa_pairs(n: int) -> list[Pair]:
    """The first `n` CoSQA test queries, each with its one relevant function."""
    data = load_beir(DATA / "code_search" / "cosqa", "test")
    row = {doc: i for i, doc in enumerate(data.corpus_ids)}
    return [
        (text, data.corpus_texts[row[next(iter(data.qrels[query]))]])
        for query, text in zip(data.query_ids[:n], data.query_texts[:n], strict=True)
    ]


def stsb_pairs(n: int) -> list[Pair]:
    """`n` STS-B test pairs at even steps through the file."""
    data = load_sts(DATA / "sts" / "stsb" / "test.tsv")
    step = max(1, len(data.scores) // n)
    return list(zip(data.sentences1[::step][:n], data.sentences2[::step][:n], strict=True))


def long_function(encoder: Encoder) -> str:
    """The first CoSQA function that fills 256 tokens (cut there, if the model cuts sooner)."""
    data = load_beir(DATA / "code_search" / "cosqa", "test")
    for text in data.corpus_texts:
        if len(encoder.tokens.encode([text], "document")[0]) >= min(256, encoder.config.max_length):
            return text
    raise SystemExit("no CoSQA function of 256 tokens")


def embed_ids(encoder: Encoder, sequences: list[list[int]], side: Side) -> torch.Tensor:
    """float32 vectors of token id sequences, as `Encoder.forward` computes them."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(sequences), BATCH):
            chunk = sequences[start : start + BATCH]
            out.append(encoder(encoder.tokens.pad(chunk, side)).float())
    return torch.cat(out)


def attention_scores(encoder: Encoder, ids: list[int], side: Side) -> np.ndarray:
    """Attention each token receives, over layers, heads and the pooled positions."""
    backbone = encoder.backbone
    backbone.set_attn_implementation("eager")
    try:
        batch = encoder.tokens.pad([ids], side)
        inputs = {
            k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch
        }
        with torch.inference_mode():
            maps = backbone(**inputs, output_attentions=True).attentions
    finally:
        backbone.set_attn_implementation("sdpa")
    received = torch.stack(maps)[:, 0].mean(dim=(0, 1))  # (queries, keys)
    if encoder.config.pooling == "mean":
        return received.mean(0).numpy()
    where = batch["pool_index"] if encoder.config.pooling == "eos" else batch["first_index"]
    return received[int(where[0])].numpy()


def settings_of(method: str, encoder: Encoder) -> attribution.Settings:
    """`lig` (Encoder.explain's defaults), `lig:LAYER`, `lig:LAYER:STEPS` or
    `lig:LAYER:STEPS:float32` (default dtype: auto)."""
    parts = method.split(":")
    layer = int(parts[1]) if len(parts) > 1 else default_layer(layer_count(encoder))
    steps = int(parts[2]) if len(parts) > 2 else DEFAULT_STEPS
    dtype = to_dtype(parts[3] if len(parts) > 3 else "auto", encoder.device)
    return attribution.Settings(layer, steps, dtype)


def grad_input(encoder: Encoder, tokens: SideTokens, side: Side, target) -> np.ndarray:
    """Gradient x input at the token embeddings, float32."""
    seen = []
    site = encoder.backbone.get_input_embeddings()
    handle = site.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.enable_grad():
            vector = encoder(encoder.tokens.pad([tokens.ids], side))
            cosine = F.cosine_similarity(vector, target[None])
            (grad,) = torch.autograd.grad(cosine.sum(), seen[0])
    finally:
        handle.remove()
    scores = (grad[0] * seen[0][0]).sum(-1).detach().numpy()
    return np.where(tokens.special, 0.0, scores)


def scores_of(method: str, encoder: Encoder, tokens: SideTokens, side: Side, target):
    """Each token's score under `method` (higher: removing it should cost more), and for
    integrated gradients how far their sum is from the cosine's change along the path,
    relative to that change."""
    if method.startswith("lig"):
        settings = settings_of(method, encoder)
        shares = attribution.attribute(encoder, tokens.ids, tokens.special, side, target, settings)
        change = shares.at_input - shares.at_baseline
        return shares.scores, abs(shares.scores.sum() - change) / abs(change)
    if method == "grad_input":
        return grad_input(encoder, tokens, side, target), None
    if method == "attention":
        return attention_scores(encoder, tokens.ids, side), None
    if method == "occlusion":
        text = [i for i, special in enumerate(tokens.special) if not special]
        cut = [[t for j, t in enumerate(tokens.ids) if j != i] for i in text]
        drops = -F.cosine_similarity(embed_ids(encoder, cut, side), target[None]).numpy()
        scores = np.zeros(len(tokens.ids))
        scores[text] = drops
        return scores, None
    raise SystemExit(f"unknown method {method!r}")


def k_of(label: str, n: int) -> int:
    return 1 if label == "1" else max(1, round(n * float(label[:-1]) / 100))


def deletion(encoder: Encoder, pairs: list[Pair], side: Side, methods: list[str]) -> dict:
    """Mean cosine drop per method and k, and the mean seconds each method took per pair."""
    rng = np.random.default_rng(0)
    drops = {m: {k: [] for k in KS} for m in [*methods, "attention", "random"]}
    gaps: dict[str, list[float]] = {}
    for query, document in pairs:
        q_tokens = side_tokens(encoder, query, "query")
        d_tokens = side_tokens(encoder, document, side)
        q, d = (
            embed_ids(encoder, [q_tokens.ids], "query")[0],
            embed_ids(encoder, [d_tokens.ids], side),
        )
        similarity = float(F.cosine_similarity(q[None], d)[0])
        text = np.array([i for i, special in enumerate(d_tokens.special) if not special])
        orders = {}
        for method in [*methods, "attention"]:
            scores, gap = scores_of(method, encoder, d_tokens, side, q)
            if gap is not None:
                gaps.setdefault(method, []).append(gap)
            orders[method] = [text[np.argsort(-scores[text], kind="stable")]]
        orders["random"] = [rng.permutation(text) for _ in range(RANDOM_DRAWS)]
        cuts, keys = [], []
        for method, draws in orders.items():
            for label in KS:
                for order in draws:
                    gone = set(order[: k_of(label, len(text))].tolist())
                    cuts.append([t for j, t in enumerate(d_tokens.ids) if j not in gone])
                    keys.append((method, label))
        cosines = F.cosine_similarity(embed_ids(encoder, cuts, side), q[None]).numpy()
        per_pair: dict[tuple[str, str], list[float]] = {}
        for key, cosine in zip(keys, cosines, strict=True):
            per_pair.setdefault(key, []).append(similarity - float(cosine))
        for (method, label), values in per_pair.items():
            drops[method][label].append(float(np.mean(values)))
    return {
        "drop": {m: {k: float(np.mean(v)) for k, v in ks.items()} for m, ks in drops.items()},
        "completeness_gap": {m: float(np.median(v)) for m, v in gaps.items()},
    }


def latency(encoder: Encoder, methods: list[str], runs: int) -> dict:
    """ms of `Encoder.explain` on a query and a 256-token function per `lig` method, with
    torch on 2 threads and on 1 (the methods take turns, so that others' work on a shared
    machine falls on all alike): the median and the fastest of `runs`, and the load
    average at the start and the end (others' work makes the figures upper bounds)."""
    function = long_function(encoder)
    query = "python serve static files"
    out: dict = {"load_before": os.getloadavg()[0]}
    chosen = [m for m in methods if m.startswith("lig")]
    for threads in (THREADS, 1):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {m: [] for m in chosen}
        for _ in range(runs + 1):  # the first: warm-up
            for method in chosen:
                settings = settings_of(method, encoder)
                options = {"layer": settings.layer, "steps": settings.steps}
                start = time.perf_counter()
                encoder.explain(query, function, dtype=settings.dtype, **options)
                times[method].append(time.perf_counter() - start)
        for method, values in times.items():
            out[f"{method}, {threads} threads"] = {
                "median_ms": 1000 * statistics.median(values[1:]),
                "fastest_ms": 1000 * min(values[1:]),
            }
    torch.set_num_threads(THREADS)
    out["load_after"] = os.getloadavg()[0]
    return out


def print_table(title: str, result: dict) -> None:
    print(f"\n{title}")
    print(f"| method | {' | '.join(f'k = {k}' for k in KS)} | sum gap |")
    print(f"|---|{'---:|' * (len(KS) + 1)}")
    for method, by_k in result["drop"].items():
        gap = result["completeness_gap"].get(method)
        cells = " | ".join(f"{by_k[k]:.4f}" for k in KS)
        print(f"| {method} | {cells} | {'-' if gap is None else f'{100 * gap:.1f}%'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="repeatable; default: default")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    report = {}
    for name in args.model or ["default"]:
        encoder = Encoder.load(name, device="cpu")
        report[name] = {}
        if args.pairs:
            for task, pairs, side in [
                ("cosqa", cosqa_pairs(args.pairs), "document"),
                ("stsb", stsb_pairs(args.pairs), "query"),
            ]:
                report[name][task] = deletion(encoder, pairs, side, args.methods)
                print_table(
                    f"{name}: {task}, {args.pairs} pairs, mean cosine drop", report[name][task]
                )
        if args.latency_runs:
            report[name]["latency"] = latency(encoder, args.methods, args.latency_runs)
            print(f"\n{name}: explain latency, {args.latency_runs} runs")
            print(json.dumps(report[name]["latency"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
