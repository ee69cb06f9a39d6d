"""`cpt embed`: texts of a file or stdin into one vector file, or corpus shards into a
folder of vector shards."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cpt_embed.cli.common import (
    BatchSizeOption,
    DeviceOption,
    DtypeOpt,
    DtypeOption,
    ModelOption,
    SideOption,
    quiet_transformers,
    say,
    user_errors,
)
from cpt_embed.model.runtime import COMPILE_FROM


class EngineOption(StrEnum):
    local = "local"
    ray = "ray"


@user_errors
def embed(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help="Texts: .txt (one a line), .jsonl, .parquet (optionally .gz), or - "
            "for lines on stdin. With -o FOLDER: shard files, folders of them or globs.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Where to write: .npy (matrix) or .parquet (id, embedding); or a folder "
            "(no suffix): one .parquet per input shard, resumable (done shards are skipped).",
        ),
    ],
    model: ModelOption = "default",
    field: Annotated[str, typer.Option(help="Text field of .jsonl/.parquet records.")] = "text",
    id_field: Annotated[
        str | None,
        typer.Option(
            help="Id field of records (default: `id` or `_id` if present, "
            "else the line or row number)."
        ),
    ] = None,
    side: Annotated[
        SideOption,
        typer.Option(
            help="query for queries and symmetric tasks, document for texts to be searched."
        ),
    ] = SideOption.query,
    batch_size: BatchSizeOption = 128,
    dtype: DtypeOpt = DtypeOption.auto,
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Tokens per text (default: the model's).")
    ] = None,
    device: DeviceOption = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help=f"torch.compile the model: ~30 s start-up, faster from then on on GPUs and "
            f"in float32; CPU bfloat16 runs faster eager (default: on from {COMPILE_FROM:,} "
            "texts; off with -o FOLDER).",
        ),
    ] = None,
    engine: Annotated[
        EngineOption,
        typer.Option(help="With -o FOLDER: local (this process) or ray (Ray Data actors)."),
    ] = EngineOption.local,
    actors: Annotated[
        int, typer.Option(min=1, help="--engine ray: actors, one Encoder (and GPU if any) each.")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="--engine ray: cluster (default: $RAY_ADDRESS, else a local one)."),
    ] = None,
) -> None:
    """Embed texts from a file or stdin into a .npy or .parquet file, or shards of a corpus
    into a folder of .parquet files (one per shard; a re-run skips the shards done)."""
    from cpt_embed.embed import EmbedSettings, embed_corpus, is_shard_folder

    settings = EmbedSettings(model, side.value, max_length, dtype.value, field, id_field)
    quiet_transformers()
    run = embed_corpus(
        inputs,
        output,
        settings,
        engine=engine.value,
        batch_size=batch_size,
        device=device,
        compile=compile,
        actors=actors,
        ray_address=ray_address,
        show_progress=True,
    )
    rate = run.texts / run.seconds if run.seconds > 0 else float("inf")
    shards = is_shard_folder(output)
    timing = (
        f"{rate:,.0f} texts/s, as the progress bar counts them: {run.seconds:.2f} s of "
        f"{'reading, ' if shards else ''}encoding and writing, the model's load not counted"
    )
    if shards:
        say(
            f"embedded {run.texts:,} texts in {run.shards - run.skipped} shards to {output} "
            f"({run.skipped} done before; {timing})"
        )
    else:
        say(f"wrote {run.texts} x {run.dim} embeddings to {output} ({timing})")
