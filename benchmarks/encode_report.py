"""The encode benchmark's Markdown report and bar chart, from the rows encode.py measures.

Also the names of the settings that the report singles out and the rule by which a peer's
setting counts, which encode.py's measurement shares.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from peers import FASTEMBED

MIN_COSINE = 0.999
# Peer settings that count and reach this share of the fastest one's texts/s in the first run
# are timed --repeats times, and at the smaller thread counts.
CONTENDER = 0.75
# As fast per FLOP as 4096² here, at an eighth of the time.
MATMUL_SIZE = 2048
OURS = "cpt-embed default"
OURS_FP32 = "cpt-embed fp32"
REFERENCE = "ST fp32"
CONTENDED = "contended: one core kept busy"


def is_peer(setting: str) -> bool:
    """Whether `setting` is a peer's (every setting but our two)."""
    return setting not in (OURS, OURS_FP32)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


Group = dict[str, dict]  # setting -> row, for one kind and thread count


def speed_table(
    groups: dict[tuple[str, int], Group], best: dict, ratios: dict, meta: dict
) -> list[str]:
    """The texts/s table, with the fastest valid peer and our ratio to it."""
    settings = list(dict.fromkeys(s for group in groups.values() for s in group))
    most = max(threads for _, threads in groups)
    repeats = meta["repeats"]

    def speed(group: Group, setting: str) -> str:
        if setting not in group:
            return "–"
        r = group[setting]
        return f"{r['texts_per_s']:,.0f}" + ("*" if r["runs"] < repeats else "")

    fastembed = (
        f"{FASTEMBED} = Qdrant's fastembed (ONNX Runtime) on ST's ONNX export, mean pooling, "
        "normalised. "
        if FASTEMBED in settings
        else ""
    )
    lines = [
        f"Texts/s. ST = sentence-transformers. {fastembed}A setting counts when its min cosine "
        f"with ST fp32 is >= {MIN_COSINE}. At {plural(most, 'thread')} every setting ran "
        "once; the contenders (ours and the valid peer settings within "
        f"{1 - CONTENDER:.0%} of the fastest valid one) "
        + (f"ran {repeats} times in all (median; * = a single run) and " if repeats > 1 else "")
        + "alone ran at fewer threads (– = not timed).",
        "",
        "| texts | threads | "
        + " | ".join(f"{OURS} ({meta['ours_dtype']})" if s == OURS else s for s in settings)
        + " | fastest valid peer | ours / fastest |",
        "|---|---:|" + "---:|" * len(settings) + "---|---:|",
    ]
    for key, group in groups.items():
        lines.append(
            f"| {key[0]} ({group[OURS]['texts']}) | {key[1]} | "
            + " | ".join(speed(group, s) for s in settings)
            + f" | {best[key]['setting']} | {ratios[key]:.2f}x |"
        )
    return lines


def flop_table(
    groups: dict[tuple[str, int], Group], best: dict, peak: dict, theoretical: dict, dtype: str
) -> list[str]:
    """Our executed GFLOP/s against the matmul and theoretical peaks, the fastest valid
    peer's useful GFLOP/s, and the peaks."""

    def rate(group: Group, setting: str, dtype: str, threads: int) -> str:
        if setting not in group:
            return "– | – | –"
        gflop_s = group[setting]["executed_gflop"] / group[setting]["seconds"]
        top = theoretical.get(dtype)
        return f"{gflop_s:.0f} | {gflop_s / peak[dtype, threads]:.0%} | " + (
            f"{gflop_s / (top * threads):.0%}" if top else "–"
        )

    thread_counts = sorted({threads for _, threads in peak})
    peak_text = "; ".join(
        d + " " + ", ".join(f"{peak[d, t]:.0f} at {plural(t, 'thread')}" for t in thread_counts)
        for d in ("float32", "bfloat16")
    )
    theory_text = ", ".join(f"{d} {v:.0f}" for d, v in theoretical.items()) or "unknown"
    lines = [
        "GFLOP/s: executed = matrix-product FLOPs of our padded batches / time (per layer and "
        "sequence of padded length s: 2s(4d² + 2df) + 4s²d, d = 384, f = 1536, 6 layers; "
        "embeddings, norms, softmax, GELU and pooling left out); useful = the same FLOPs over "
        "the real tokens alone, equal work for every setting; % of a torch.matmul "
        f"{MATMUL_SIZE}² at the same thread count and of the CPU's theoretical peak.",
        "",
        f"| texts | threads | tokens (padded) | ours GFLOP/s | % matmul {dtype} "
        f"| % theoretical {dtype} | ours fp32 GFLOP/s | % matmul fp32 | % theoretical fp32 "
        "| fastest valid peer, useful GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (kind, threads), group in groups.items():
        ours, top = group[OURS], best[kind, threads]
        lines.append(
            f"| {kind} | {threads} | {ours['tokens']:,} ({ours['padded_tokens']:,}) "
            f"| {rate(group, OURS, dtype, threads)} "
            f"| {rate(group, OURS_FP32, 'float32', threads)} "
            f"| {top['useful_gflop'] / top['seconds']:.0f} ({top['setting']}) |"
        )
    return [
        *lines,
        "",
        f"Peaks, GFLOP/s: torch.matmul {peak_text}; theoretical per core: {theory_text}, "
        "at the clock /proc/cpuinfo reports. Where the measured matmul beats that figure the "
        "cores run above the reported clock (turbo), so the % of the matmul peak is the "
        "better measure of the distance to the limit.",
    ]


def report(rows: list[dict], peaks: list[dict], theoretical: dict[str, float], meta: dict) -> str:
    """Markdown: texts/s, cosines, FLOP/s, and a few sentences."""
    groups: dict[tuple[str, int], Group] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["threads"]), {})[r["setting"]] = r
    kinds = list(dict.fromkeys(kind for kind, _ in groups))
    most = max(threads for _, threads in groups)
    best = {
        key: max(
            (r for r in group.values() if is_peer(r["setting"]) and r["valid"]),
            key=lambda r: r["texts_per_s"],
        )
        for key, group in groups.items()
    }
    ratios = {key: groups[key][OURS]["texts_per_s"] / best[key]["texts_per_s"] for key in groups}
    compared = [s for s in dict.fromkeys(r["setting"] for r in rows) if s != REFERENCE]
    lowest = {
        (kind, s): min(r["min_cosine"] for r in rows if r["kind"] == kind and r["setting"] == s)
        for kind in kinds
        for s in compared
    }
    peak = {(p["dtype"], p["threads"]): p["gflop_s"] for p in peaks}
    dtype = meta["ours_dtype"]
    invalid = [
        f"{s} (min cosine {min(lowest[k, s] for k in kinds):.4f})"
        for s in compared
        if min(lowest[k, s] for k in kinds) < MIN_COSINE
    ]
    heaviest = max(kinds, key=lambda k: groups[k, most][OURS]["executed_gflop"])
    heavy = groups[heaviest, most][OURS]
    heavy_rate = heavy["executed_gflop"] / heavy["seconds"]
    contended = (
        "Contended: a second process (a Python busy loop) kept one core busy through every "
        "timing, the matmul peaks included. "
        if meta["contended"]
        else ""
    )
    lines = [
        f"{contended}{meta['versions']}. CPU: {meta['cpu']}. {meta['load']}; "
        f"{meta['minutes']:.1f} min." + "".join(f" {note}." for note in meta["notes"]),
        "",
        *speed_table(groups, best, ratios, meta),
        "",
        "Min cosine with ST fp32 (lowest over the thread counts):",
        "",
        "| texts | " + " | ".join(compared) + " |",
        "|---|" + "---:|" * len(compared),
        *(
            f"| {kind} | " + " | ".join(f"{lowest[kind, s]:.5f}" for s in compared) + " |"
            for kind in kinds
        ),
        "",
        *flop_table(groups, best, peak, theoretical, dtype),
        "",
        "cpt-embed's default encodes "
        + ", ".join(f"{ratios[k]:.2f}x ({k[0]}, {plural(k[1], 'thread')})" for k in ratios)
        + f" the texts/s of the fastest peer setting with cosine >= {MIN_COSINE}"
        + (f" ({CONTENDED})" if meta["contended"] else "")
        + ". "
        + (
            f"Faster or not, {', '.join(invalid)} {'does' if len(invalid) == 1 else 'do'} "
            "not count. "
            if invalid
            else f"Every setting kept cosine >= {MIN_COSINE}. "
        )
        + f"On {heaviest} texts at {plural(most, 'thread')} ours executes {heavy_rate:.0f} "
        f"GFLOP/s, {heavy_rate / peak[dtype, most]:.0%} of the {dtype} matmul peak: the rest "
        "goes to attention, softmax, norms, GELU, tokenisation and small matrix shapes.",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Grouped bars: texts/s per kind at the highest thread count, one bar per setting;
    hatched where the setting's min cosine is below MIN_COSINE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    threads = max(r["threads"] for r in rows)
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    colours = dict(zip(settings, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        group = {r["setting"]: r for r in rows if r["kind"] == kind and r["threads"] == threads}
        names = [s for s in settings if s in group]
        bars = ax.bar(
            range(len(names)),
            [group[n]["texts_per_s"] for n in names],
            color=[colours[n] for n in names],
        )
        for bar, name in zip(bars, names, strict=True):
            if not group[name]["valid"]:
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{kind} ({group[names[0]]['texts']} texts)")
    axes[0][0].set_ylabel(f"texts/s at {plural(threads, 'thread')}")
    title = "\n".join(textwrap.wrap(result["title"], 55 * len(kinds), break_on_hyphens=False))
    fig.suptitle(f"{title}\nhatched: min cosine < {MIN_COSINE} vs ST fp32", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
