"""The main job on the default model, small enough for a laptop: mine text and code pairs,
embed queries, texts and code, train briefly on the code pairs, and compare code search
on CoSQA (and STS-B) before and after.

Run with `make demo` (a few minutes on 2 CPU cores; evaluations are cached).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cpt_embed import Encoder
from cpt_embed.data.mine import mine_code, mine_text
from cpt_embed.data.shards import pair_files, read_shard
from cpt_embed.errors import InputError
from cpt_embed.eval import evaluate
from cpt_embed.eval.cache import default_cache_dir
from cpt_embed.eval.data import find_data_dir
from cpt_embed.eval.report import print_table
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import train

RUNS = Path("runs/demo")
TRAIN_PAIRS = 2000
TRAIN = {"batch_size": 64, "chunk_size": 32, "max_steps": 20, "lr": 5e-5, "max_length": 64}
QUERIES = [
    "how do I reverse a list in python",
    "read a json file",
    "a pet that purrs",
    "capital city of France",
]
DOCUMENTS = [
    "def reverse(items):\n    return items[::-1]",
    "with open(path) as f:\n    data = json.load(f)",
    "Cats are small domesticated felines that often purr when content.",
    "Paris is the capital and largest city of France.",
    "The stock market fell sharply on Tuesday.",
]


def mine(console: Console, encoder: Encoder, data_dir: Path | None) -> None:
    import json as json_module

    shutil.rmtree(RUNS, ignore_errors=True)
    console.rule("1. mine unlabeled pairs")
    stdlib = Path(json_module.__file__).parent.parent
    code = mine_code([stdlib], RUNS / "code-pairs", limit=TRAIN_PAIRS, show_progress=False)
    console.print(
        f"code: {code.pairs} (docstring, function) pairs from the Python standard "
        f"library in {code.seconds:.1f}s"
    )
    if data_dir is not None:

        def count_tokens(texts):
            ids = encoder.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            return [len(x) for x in ids]

        text = mine_text(
            [data_dir / "unsupervised" / "wikipedia_en" / "docs.jsonl"],
            RUNS / "text-pairs",
            count_tokens=count_tokens,
            limit=300,
            show_progress=False,
        )
        console.print(
            f"text: {text.pairs} neighbouring-passage pairs from "
            f"{text.counts['documents']} Wikipedia articles in {text.seconds:.1f}s"
        )
    for folder in sorted(RUNS.iterdir()):
        pair = next(read_shard(pair_files(folder)[0]))
        console.print(f"[dim]{pair['source']}[/]", highlight=False)
        console.print(f"  x: {pair['x'][:110]}", highlight=False)
        console.print(f"  y: {pair['y'][:110].splitlines()[0]} ...", highlight=False)


def similarities(console: Console, encoder: Encoder) -> None:
    console.rule("2. embed queries and documents")
    queries = encoder.encode(QUERIES, side="query")
    documents = encoder.encode(DOCUMENTS, side="document")
    scores = queries @ documents.T  # unit vectors: the dot product is the cosine
    table = Table(title="cosine similarity of each query (row) with each document (column)")
    table.add_column("query")
    for i in range(len(DOCUMENTS)):
        table.add_column(f"d{i}", justify="right")
    for query, row in zip(QUERIES, scores, strict=True):
        best = row.argmax()
        cells = [f"[bold green]{s:.2f}[/]" if j == best else f"{s:.2f}" for j, s in enumerate(row)]
        table.add_row(query, *cells)
    for i, doc in enumerate(DOCUMENTS):
        console.print(f"d{i}: {doc.splitlines()[0]}", highlight=False)
    console.print(table)
    hits = sum(int(row.argmax()) == i for i, row in enumerate(scores))
    console.print(f"{hits}/{len(QUERIES)} queries rank their matching document first")


def train_and_compare(console: Console, data_dir: Path | None) -> None:
    console.rule("3. train briefly on the code pairs (gradient-cached contrastive loss)")
    config = TrainConfig(
        model="default",
        data=[str(RUNS / "code-pairs")],
        output=str(RUNS / "train"),
        save_every=1000,
        log_every=5,
        **TRAIN,
    )
    final = train(config)
    console.print(f"trained {config.max_steps} steps of {config.batch_size} pairs: {final}")
    if data_dir is None:
        return
    console.rule("4. evaluate before and after (code search on CoSQA, similarity on STS-B)")
    tasks = ["stsb", "cosqa"]
    before = evaluate(
        Encoder.load("default", max_length=TRAIN["max_length"]),
        tasks,
        data_dir,
        cache_dir=default_cache_dir(),
        show_progress=False,
    )
    after = evaluate(
        Encoder.load(final), tasks, data_dir, cache_dir=default_cache_dir(), show_progress=False
    )
    before.model, after.model = "all-MiniLM-L6-v2", "after training"
    print_table([before, after], console)
    (RUNS / "eval.json").write_text(
        json.dumps(
            {r.model: {x.task: x.scores for x in r.results} for r in (before, after)}, indent=2
        )
    )
    console.print("the full suite: cpt eval --model default --model runs/demo/train/model")


def main() -> None:
    console = Console()
    start = time.perf_counter()
    encoder = Encoder.load("default")
    console.print(
        f"loaded [bold]{encoder.config.base_model}[/] (dim {encoder.dim}, "
        f"pooling {encoder.config.pooling}) in {time.perf_counter() - start:.1f}s"
    )
    try:
        data_dir = find_data_dir()
    except InputError:
        data_dir = None
        console.print("[yellow]no ../shared/data here: skipping the text pairs and evaluation")
    mine(console, encoder, data_dir)
    similarities(console, encoder)
    train_and_compare(console, data_dir)


if __name__ == "__main__":
    main()
