"""The training benchmark's Markdown tables, ratios and bar chart, from the rows train.py
measures."""

from __future__ import annotations

import pathlib

NAMES = {"ours": "cpt-embed", "mnrl": "ST MNRL", "cached-mnrl": "ST CachedMNRL"}


def label(row: dict) -> str:
    """A row's configuration in words (the progress lines, the chart)."""
    chunk = f", chunk {row['chunk']}" if row["chunk"] else ""
    if row["loss"] == "ours" and row["chunk"]:
        chunk += ", cached" if row.get("grad_cache") else ", cached if it must"
    model = "" if row["model"] == "default" else f"{pathlib.Path(row['model']).name}, "
    return f"{model}{NAMES[row['loss']]}, {row['dtype']}, batch {row['batch']}{chunk}"


def find_row(rows: list[dict], loss: str, dtype: str, cached: bool, model: str | None = None):
    """The row of this loss and dtype, cached or not (ours: grad_cache forced; the peers:
    CachedMNRL)."""
    for row in rows:
        is_cached = bool(row.get("grad_cache")) or row["loss"] == "cached-mnrl"
        if (row["loss"], row["dtype"], is_cached) == (loss, dtype, cached) and (
            model is None or row["model"] == model
        ):
            return row
    return None


def ratios(rows: list[dict]) -> dict[str, float]:
    """Speed-ups over sentence-transformers (pairs/s) and the cost of gradient caching (time
    per pair, cached over one chunk, ours at the same batch)."""
    out = {}
    pairs = {
        "ours_fp32_vs_mnrl_fp32": (("ours", "float32", False), ("mnrl", "float32", False)),
        "ours_bf16_vs_mnrl_bf16": (("ours", "bfloat16", False), ("mnrl", "bfloat16", False)),
        "ours_cached_vs_cached_mnrl": (("ours", "float32", True), ("cached-mnrl", "float32", True)),
        "caching_cost": (("ours", "float32", False), ("ours", "float32", True)),
    }
    for name, (a, b) in pairs.items():
        first, second = find_row(rows, *a), find_row(rows, *b)
        if first and second:
            out[name] = first["pairs_per_s"] / second["pairs_per_s"]
    return out


def markdown(
    rows: list[dict], found: dict[str, float], n_pairs: int, lr: float, scale: float
) -> str:
    """The CPU table and what it says against the targets."""
    lines = [
        "| configuration | batch | chunk | s/step | pairs/s | model TFLOP/s | MFU | batch "
        "preparation / step | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        prepare = f"{r['prepare_share']:.1%}" if "prepare_share" in r else "(in its step)"
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else ""
        tflops = f"{r['tflops']:.3f}" if "tflops" in r else ""
        lines.append(
            f"| {NAMES[r['loss']]}{', cached' if r.get('cached_share') else ''}, {r['dtype']} "
            f"| {r['batch']} | {r['chunk'] or '-'} "
            f"| {r['step_s']:.2f} | {r['pairs_per_s']:.1f} | {tflops} | {mfu} | {prepare} "
            f"| {r['peak_rss_mb']:,.0f} |"
        )
    first = rows[0]
    lines += [
        "",
        f"all-MiniLM-L6-v2 on CPU ({first['threads']} torch threads), {n_pairs} distinct "
        "(docstring, code) pairs mined from the Python standard library at run time, max "
        f"length {first['max_length']}, lr {lr}, scale {scale:g}, median of "
        f"{first['timed_steps']} timed steps after one warm-up, each configuration in its "
        "own process. MFU against a measured matrix product in each row's dtype, the same "
        "model FLOPs for both libraries. Ours by default keeps a batch's chunks in one graph "
        "while their activations fit a quarter of the free memory, and caches gradients past "
        "it (`cached`: the steps ran with gradient caching, forced for the row next to "
        "CachedMNRL). Our loss is symmetric (x->y and y->x), MNRL "
        "one-directional. Batch preparation: gathering the token ids from the cache and "
        "cutting each side into chunks, on the step's critical path here (`cpt train` "
        "prepares the next batches in a background thread).",
    ]
    said = []
    if "ours_fp32_vs_mnrl_fp32" in found:
        said.append(
            f"cpt-embed trains {found['ours_fp32_vs_mnrl_fp32']:.2f}x the pairs/s of "
            "sentence-transformers MNRL in float32 (target >= 1.7x)"
        )
    if "ours_bf16_vs_mnrl_bf16" in found:
        said.append(f"{found['ours_bf16_vs_mnrl_bf16']:.2f}x in bfloat16")
    if "ours_cached_vs_cached_mnrl" in found:
        said.append(
            f"with gradient caching {found['ours_cached_vs_cached_mnrl']:.2f}x CachedMNRL's "
            "(target >= 1.5x)"
        )
    if "caching_cost" in found:
        said.append(
            f"gradient caching costs {found['caching_cost']:.2f}x the time per pair of "
            "the same batch and chunks in one graph (target <= 1.25x)"
        )
    if said:
        lines += ["", "; ".join(said) + "."]
    return "\n".join(lines)


def gpu_markdown(rows: list[dict], n_pairs: int) -> str:
    """One table for every model: ours against CachedMNRL on the same GPU and settings."""
    lines = [
        "| model | configuration | batch | s/step | pairs/s | MFU | peak GPU GiB "
        "| GPU utilisation | vs CachedMNRL |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peer = find_row(rows, "cached-mnrl", r["dtype"], True, r["model"])
        ratio = f"{r['pairs_per_s'] / peer['pairs_per_s']:.2f}x" if peer and r is not peer else ""
        util = f"{r['gpu_util']:.0f}%" if r.get("gpu_util") is not None else "-"
        memory = f"{r['peak_gpu_mb'] / 1024:.1f}" if r.get("peak_gpu_mb") else "-"
        lines.append(
            f"| {pathlib.Path(r['model']).name} | {NAMES[r['loss']]}, {r['dtype']}"
            f"{', chunk ' + str(r['chunk']) if r['chunk'] and r['loss'] != 'ours' else ''} "
            f"| {r['batch']} | {r['step_s']:.2f} | {r['pairs_per_s']:,.0f} "
            f"| {r.get('mfu', 0):.1%} | {memory} | {util} | {ratio} |"
        )
    ours = next((r for r in rows if "plan" in r), rows[0])
    lines += [
        "",
        f"{n_pairs} distinct pairs, max length {ours['max_length']} both sides, gradient "
        "caching for both (ours: chunks sized from the GPU's free memory, packed rows; "
        "CachedMNRL: mini-batches of the chunk given), bfloat16 autocast, median of "
        f"{ours['timed_steps']} timed steps after one warm-up, each in its own process. MFU "
        f"against the {ours.get('peak_source', '?')} peak. Our chunk plan: {ours.get('plan', '')}.",
    ]
    return "\n".join(lines)


def memory_markdown(rows: list[dict]) -> str:
    """Peak memory by max length and batch, and what each pair adds."""
    lines = [
        "| max length | batch | chunk | peak RSS MiB | MiB per pair over the smallest batch "
        "| announced per chunk |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for length in sorted({r["max_length"] for r in rows}):
        group = sorted((r for r in rows if r["max_length"] == length), key=lambda r: r["batch"])
        base = group[0]
        for r in group:
            extra = r["batch"] - base["batch"]
            per_pair = (r["peak_rss_mb"] - base["peak_rss_mb"]) / extra if extra else 0.0
            announced = r.get("plan", "").split("about ")[-1].split(" of")[0]
            lines.append(
                f"| {length} | {r['batch']} | {r['chunk']} | {r['peak_rss_mb']:,.0f} "
                f"| {per_pair:.3f} | {announced} |"
            )
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    """Bars of pairs/s per configuration, cpt-embed and sentence-transformers in two colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    colours = ["tab:blue" if r["library"] == "cpt-embed" else "tab:grey" for r in rows]
    ax.barh([label(r) for r in rows], [r["pairs_per_s"] for r in rows], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("training pairs/s (higher is better)")
    ax.set_title(f"Training, max length {rows[0]['max_length']}, device {rows[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
