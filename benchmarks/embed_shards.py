"""Throughput of `cpt embed -o FOLDER` over a sharded corpus: the local engine vs the Ray
engine with 1, 2 ... actors, same run, same machine.

    python benchmarks/embed_shards.py [--texts 20000] [--shards 8] [--actors 1 2]
                                      [--model default] [--batch-size 128] [--json PATH]

Texts: the first --texts sentences of 6 to 40 words from the English Wikipedia extract
(STS-B-like lengths), written as --shards JSONL shards. Each engine embeds all of them into
a fresh folder; texts/s counts everything from the call to the last shard written: model
loading, and for Ray the actors' start-up, but not the Ray instance's own start (once, up
front, with every CPU of the machine; its workers at nice 0 unless $RAY_worker_niceness says
otherwise). Every Ray output is compared with the local one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cpt_embed.atomic import atomic_file
from cpt_embed.data.vectors import read_vectors
from cpt_embed.embed import EmbedSettings, embed_shards
from cpt_embed.eval.data import find_data_dir

WIKIPEDIA = Path("unsupervised") / "wikipedia_en" / "docs.jsonl"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")


def wikipedia_sentences(count: int) -> list[str]:
    """The first `count` sentences of 6 to 40 words, in file order."""
    sentences: list[str] = []
    with open(find_data_dir() / WIKIPEDIA, encoding="utf-8") as handle:
        for line in handle:
            for sentence in SENTENCE_END.split(json.loads(line)["text"]):
                if 6 <= len(sentence.split()) <= 40:
                    sentences.append(sentence.strip())
                    if len(sentences) == count:
                        return sentences
    raise SystemExit(f"only {len(sentences)} sentences in {WIKIPEDIA}; ask for fewer")


def write_shards(texts: list[str], shards: int, folder: Path) -> None:
    """`texts` as `shards` JSONL files of about equal size, ids `s<shard>-<row>`."""
    for index, part in enumerate(np.array_split(np.arange(len(texts)), shards)):
        with open(folder / f"part-{index:04d}.jsonl", "w", encoding="utf-8") as handle:
            for row, i in enumerate(part):
                handle.write(json.dumps({"id": f"s{index}-{row}", "text": texts[i]}) + "\n")


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the vectors of two shard folders."""
    worst = 0.0
    for file in sorted(a.glob("*.parquet")):
        ids_a, vectors_a = read_vectors(file)
        ids_b, vectors_b = read_vectors(b / file.name)
        if ids_a != ids_b:
            raise SystemExit(f"{file.name}: the engines wrote different ids")
        worst = max(worst, float(np.abs(vectors_a - vectors_b).max(initial=0.0)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    import ray

    texts = wikipedia_sentences(args.texts)
    settings = EmbedSettings(args.model, dtype=args.dtype)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus, local = Path(tmp) / "corpus", Path(tmp) / "local"
        corpus.mkdir()
        write_shards(texts, args.shards, corpus)
        runs = [("local", 1)] + [("ray", actors) for actors in args.actors]
        for engine, actors in runs:
            if engine == "ray" and not ray.is_initialized():
                # Ray runs its workers at nice 15; beside other jobs that would time the
                # scheduler, not the engine: give them the local engine's priority
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            out = Path(tmp) / f"{engine}-{actors}"
            load = os.getloadavg()[0]
            started = time.perf_counter()  # run.seconds leaves the local model's load out
            run = embed_shards(
                [corpus],
                out,
                settings,
                engine=engine,
                actors=actors,
                batch_size=args.batch_size,
            )
            seconds = time.perf_counter() - started
            if engine == "local":
                out.rename(local)
                difference = 0.0
            else:
                difference = max_difference(local, out)
            rows.append(
                {
                    "engine": engine,
                    "actors": actors if engine == "ray" else None,
                    "texts": run.texts,
                    "seconds": round(seconds, 1),
                    "texts_per_s": round(run.texts / seconds, 1),
                    "max_abs_diff_vs_local": difference,
                    "load_average_before": load,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{args.texts:,} sentences, {args.shards} shards, {args.model}, {os.cpu_count()} CPUs")
    print("| engine | actors | texts/s | seconds | max abs diff vs local | load avg before |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['engine']} | {row['actors'] or '-'} | {row['texts_per_s']:,.0f} | "
            f"{row['seconds']} | {row['max_abs_diff_vs_local']:.1e} | "
            f"{row['load_average_before']:.1f} |"
        )
    if args.json:
        with atomic_file(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
