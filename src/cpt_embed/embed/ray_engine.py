"""The `ray` engine of `embed_shards`: Ray Data reads the pending shards in tasks, a pool of
actors (one Encoder each, one GPU each where the cluster has GPUs) embeds their texts, and
this process writes each shard as soon as all its rows are back. Ray is an optional
dependency (`cpt-embed[ray]`)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cpt_embed.data.readers import read_texts
from cpt_embed.data.vectors import write_vectors
from cpt_embed.embed.corpus import EmbedSettings, Shard, load_encoder, progress
from cpt_embed.errors import InputError

# The last line of the traceback of one of our errors, as Ray reports it.
_OUR_ERROR = re.compile(r"^cpt_embed\.[\w.]+: (.+)$", re.MULTILINE)


def import_ray():
    """The `ray` module with Ray Data, or the one-line error that says how to install it."""
    try:
        import ray.data
    except ImportError:
        raise InputError(
            "--engine ray needs Ray: install cpt-embed[ray] (pip install 'cpt-embed[ray]')"
        ) from None
    return ray


def _read_rows(batch: dict[str, np.ndarray], field: str, id_field: str | None) -> dict:
    """Ray Data stage: the texts of one shard as rows (shard, row, count, id, text). An
    empty shard gives one row with count 0 (and an empty text), so that the driver learns
    it is done and writes its empty output."""
    (shard,), (source,) = batch["shard"], batch["source"]
    data = read_texts(str(source), field=field, id_field=id_field)
    n = len(data.texts)
    ids, texts = (data.ids, data.texts) if n else ([""], [""])
    rows = max(n, 1)
    return {
        "shard": np.full(rows, shard, dtype=np.int64),
        "row": np.arange(rows, dtype=np.int64),
        "count": np.full(rows, n, dtype=np.int64),
        "id": np.array(ids, dtype=object),
        "text": np.array(texts, dtype=object),
    }


class EmbedActor:
    """Ray Data actor: loads the Encoder once, then embeds each batch of rows it is given,
    replacing the `text` column by `embedding`. Torch gets `threads` threads, the actor's
    share of the CPUs, so that actors on one machine do not oversubscribe its cores."""

    def __init__(
        self,
        settings: dict[str, Any],
        device: str | None,
        batch_size: int,
        compile: bool,
        threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.settings = EmbedSettings(**settings)
        self.encoder = load_encoder(self.settings, device)
        self.batch_size = batch_size
        self.compile = compile

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch.pop("text")]
        batch["embedding"] = self.encoder.encode(
            texts,
            side=self.settings.side,
            batch_size=self.batch_size,
            dtype=self.settings.dtype,
            compile=self.compile,
        )
        return batch


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator:
    """The `ray` module connected to a cluster (`address`, or a local one), disconnected
    afterwards if this connected it; errors the user can fix become one-line errors."""
    ray = import_ray()
    connected = not ray.is_initialized()
    if connected:
        ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        raise user_error from None
    finally:
        if connected:
            ray.shutdown()


def embed_with_ray(
    pending: list[Shard],
    out: Path,
    settings: EmbedSettings,
    batch_size: int,
    device: str | None,
    compile: bool,
    actors: int,
    address: str | None,
    show_progress: bool,
) -> tuple[int, int, float]:
    """Embed `pending` on the Ray cluster at `address`: tasks read the shards, an actor pool
    embeds them, and this process writes each shard as soon as all its rows are back; the
    number of texts embedded, their dimension and the seconds the progress bar counted."""
    with _ray_session(address) as ray:
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        use_gpu = gpus > 0 and (device is None or device.startswith("cuda"))
        if use_gpu and actors > gpus:
            raise InputError(f"--actors {actors} needs {actors} GPUs; the Ray cluster has {gpus}")
        if not use_gpu and actors > cpus:
            raise InputError(f"--actors {actors} needs {actors} CPUs; the Ray cluster has {cpus}")
        threads = max(1, cpus // actors)
        # GPU actors need a core for tokenising; CPU actors an equal share of the cores. The
        # readers ask for no CPU: they would otherwise wait for cores the actors hold.
        actor_resources = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": threads}
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts shards
        items = [{"shard": i, "source": str(s.source.resolve())} for i, s in enumerate(pending)]
        dataset = (
            ray.data.from_items(items)
            .map_batches(
                _read_rows,
                batch_size=1,
                fn_kwargs={"field": settings.field, "id_field": settings.id_field},
                num_cpus=0,
            )
            .map_batches(
                EmbedActor,
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                fn_constructor_kwargs={
                    "settings": asdict(settings),
                    "device": "cuda" if use_gpu else (device or "cpu"),
                    "batch_size": batch_size,
                    "compile": compile,
                    "threads": threads,
                },
                **actor_resources,
            )
        )
        return _write_shards(dataset, pending, out, show_progress)


def _write_shards(
    dataset, pending: list[Shard], out: Path, show_progress: bool
) -> tuple[int, int, float]:
    """Write each shard of `pending` once the embedded rows of `dataset` hold all of it."""
    partial: dict[int, _PartialShard] = {}
    texts, dim = 0, 0
    start = time.perf_counter()
    with progress(len(pending), show_progress) as bar:
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for index in np.unique(batch["shard"]):
                rows = batch["shard"] == index
                count = int(batch["count"][rows][0])
                vectors = np.asarray(batch["embedding"][rows], dtype=np.float32)
                dim = vectors.shape[1]
                part = partial.setdefault(int(index), _PartialShard(count, dim))
                part.add(batch["row"][rows], batch["id"][rows], vectors)
                if part.done:
                    write_vectors(out / pending[int(index)].name, part.vectors, part.ids)
                    del partial[int(index)]
                    texts += count
                    bar.set_postfix(
                        texts=texts, rate=f"{texts / (time.perf_counter() - start):,.0f}/s"
                    )
                    bar.update(1)
    if partial:  # Ray lost rows: never expected, but never write an incomplete shard
        names = ", ".join(pending[i].name for i in sorted(partial))
        raise RuntimeError(f"incomplete shards after the Ray run: {names}; run again")
    return texts, dim, time.perf_counter() - start


def _user_error(err: BaseException) -> InputError | None:
    """Our own error (a bad shard, a missing model) raised inside Ray, as one line for the
    user instead of Ray's task report. Ray Data keeps only the text of the original error
    (its traceback, which ends `cpt_embed.<module>.<Class>: <message>`), so read it there."""
    match = _OUR_ERROR.search(str(err))
    return InputError(match.group(1)) if match else None


class _PartialShard:
    """The rows of one shard gathered so far, in shard order."""

    def __init__(self, count: int, dim: int) -> None:
        self.vectors = np.empty((count, dim), dtype=np.float32)
        self.ids: list[str] = [""] * count
        self.filled = 0
        self.count = count

    def add(self, rows: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.count == 0:  # the marker row of an empty shard
            return
        self.vectors[rows] = vectors
        for row, id_ in zip(rows.tolist(), ids.tolist(), strict=True):
            self.ids[row] = str(id_)
        self.filled += len(rows)

    @property
    def done(self) -> bool:
        return self.filled == self.count
