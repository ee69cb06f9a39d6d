"""The main job on the default model, small enough for a laptop: embed queries, texts and
code with cpt-embed and show which document each query finds.

Run with `make demo`. Later stages (mine pairs, train, evaluate, search) join as they land.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from cpt_embed import Encoder

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


def main() -> None:
    console = Console()
    start = time.perf_counter()
    encoder = Encoder.load("default")
    console.print(
        f"loaded [bold]{encoder.config.base_model}[/] "
        f"(dim {encoder.dim}, pooling {encoder.config.pooling}) "
        f"in {time.perf_counter() - start:.1f}s"
    )
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


if __name__ == "__main__":
    main()
