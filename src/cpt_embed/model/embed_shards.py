"""Embedding a corpus of many shards: one Parquet file of (id, embedding) per input shard.

A corpus too large for one file comes as shards (JSONL or Parquet files). Each output shard
is written atomically and named after its input, so an interrupted run leaves whole shards
only, and a re-run skips them: the work lost to a crash is at most the shards in flight. A
manifest in the output folder records the settings that shape the vectors; a re-run with
other settings would mix two kinds of vectors in one folder, so it is refused.

Two engines: `local` embeds shard after shard in this process (no Ray import); `ray` runs
Ray Data with a pool of actors, each holding one Encoder, over the texts of all pending
shards, for several GPUs or machines. Ray is an optional dependency (`cpt-embed[ray]`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_file
from cpt_embed.data.readers import TEXT_SUFFIXES, read_texts
from cpt_embed.data.vectors import write_vectors
from cpt_embed.errors import InputError, missing_path
from cpt_embed.model.config import Side
from cpt_embed.model.encoder import Encoder

MANIFEST = "manifest.json"
ENGINES = ("local", "ray")
# The last line of the traceback of one of our errors, as Ray reports it.
_OUR_ERROR = re.compile(r"^cpt_embed\.[\w.]+: (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class EmbedSettings:
    """What decides the vectors of a shard folder; recorded in its manifest."""

    model: str
    side: Side = "query"
    max_length: int | None = None
    dtype: str = "auto"
    field: str = "text"
    id_field: str | None = None

    def recorded(self) -> dict[str, Any]:
        """The settings as the manifest holds them: a local model as an absolute path, so
        that a re-run from another folder names the same model."""
        settings = asdict(self)
        if Path(self.model).expanduser().exists():
            settings["model"] = str(Path(self.model).expanduser().resolve())
        return settings


@dataclass(frozen=True)
class Shard:
    """An input file and the name of its output below the output folder."""

    source: Path
    name: str


@dataclass(frozen=True)
class ShardRun:
    """What a run did: shards found, shards skipped as done, texts embedded, seconds."""

    shards: int
    skipped: int
    texts: int
    seconds: float


def _text_stem(path: Path) -> str | None:
    """The file name without its text suffixes (`a.jsonl.gz` -> `a`); None for other files."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in TEXT_SUFFIXES or (suffix.lower() == ".parquet" and name != path.name):
        return None
    return stem


def find_shards(inputs: Sequence[str | os.PathLike], out_dir: Path) -> list[Shard]:
    """The shards of `inputs` (files, folders searched recursively, glob patterns), in a
    stable order. Outputs are named after their inputs (`part-1.jsonl.gz` ->
    `part-1.parquet`; below a folder input, its relative path). Two inputs with one output
    name, or an output folder inside an input folder, are errors."""
    shards: list[Shard] = []
    out = out_dir.resolve()
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if text == "-":
            raise InputError("stdin cannot be split into shards; write it to a file first")
        if path.is_dir():
            root = path.resolve()
            if out == root or root in out.parents:
                raise InputError(f"{out_dir}: the output folder must lie outside input {path}")
            found = [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and _text_stem(p) is not None
            ]
            if not found:
                raise InputError(f"{path}: no .jsonl, .parquet or .txt files (optionally .gz)")
            for p in found:
                relative = p.relative_to(path).with_name(f"{_text_stem(p)}.parquet")
                shards.append(Shard(p, relative.as_posix()))
            continue
        if path.is_file():
            files = [path]
        elif glob.has_magic(text):
            files = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
            if not files:
                raise InputError(f"{text}: no files match")
        else:
            raise missing_path(path)
        for file in files:
            stem = _text_stem(file)
            if stem is None:
                raise InputError(
                    f"{file}: not a shard; use .jsonl, .parquet or .txt (optionally .gz)"
                )
            shards.append(Shard(file, f"{stem}.parquet"))
    seen: dict[str, Path] = {}
    for shard in shards:
        if shard.name in seen:
            raise InputError(
                f"{seen[shard.name]} and {shard.source} would both write {shard.name}; "
                "rename one or embed them into different folders"
            )
        seen[shard.name] = shard.source
    return shards


def open_output(out_dir: Path, settings: EmbedSettings) -> None:
    """Create `out_dir` with its manifest, or check that the one there records `settings`."""
    manifest = out_dir / MANIFEST
    current = settings.recorded()
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{manifest}: unreadable ({err}); use another folder") from None
        changed = [
            f"{key} {recorded.get(key)!r} -> {value!r}"
            for key, value in current.items()
            if recorded.get(key) != value
        ]
        if changed:
            raise InputError(
                f"{out_dir} holds vectors made with other settings ({'; '.join(changed)}); "
                "use another output folder or delete this one"
            )
        return
    if out_dir.is_dir() and any(out_dir.rglob("*.parquet")):
        raise InputError(
            f"{out_dir} holds .parquet files but no {MANIFEST}; use a new or empty folder"
        )
    with atomic_file(manifest, "w") as handle:
        json.dump(current, handle, indent=2)
        handle.write("\n")


def load_encoder(settings: EmbedSettings, device: str | None) -> Encoder:
    """The Encoder of `settings` (its max_length applied) on `device` (default: auto)."""
    overrides = {"max_length": settings.max_length} if settings.max_length else {}
    return Encoder.load(settings.model, device=device, **overrides)


def embed_shards(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: EmbedSettings,
    *,
    engine: str = "local",
    batch_size: int = 128,
    device: str | None = None,
    compile: bool = False,
    actors: int = 1,
    ray_address: str | None = None,
    show_progress: bool = False,
) -> ShardRun:
    """Embed every shard of `inputs` whose output is not in `out_dir` yet.

    `engine="local"` runs in this process; `engine="ray"` runs `actors` Ray actors (one GPU
    each where the cluster has GPUs, else an equal share of its CPUs) on the cluster at
    `ray_address` (default: $RAY_ADDRESS, else a local instance started for this run).
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if actors < 1:
        raise InputError(f"--actors must be >= 1, got {actors}")
    if engine == "ray":
        _import_ray()  # before any work: a missing extra is a one-line error
    out = Path(out_dir)
    shards = find_shards(inputs, out)
    open_output(out, settings)
    pending = [s for s in shards if not (out / s.name).is_file()]
    start = time.perf_counter()
    texts = 0
    if pending and engine == "local":
        texts = _embed_local(pending, out, settings, batch_size, device, compile, show_progress)
    elif pending:
        with _ray_session(ray_address) as ray:
            texts = _embed_ray(
                ray, pending, out, settings, batch_size, device, compile, actors, show_progress
            )
    return ShardRun(len(shards), len(shards) - len(pending), texts, time.perf_counter() - start)


def _progress(shards: int, show: bool) -> tqdm:
    return tqdm(total=shards, unit="shard", desc="embedding", disable=not show, dynamic_ncols=True)


def _embed_local(
    pending: list[Shard],
    out: Path,
    settings: EmbedSettings,
    batch_size: int,
    device: str | None,
    compile: bool,
    show_progress: bool,
) -> int:
    """Shard after shard in this process, with one Encoder; the number of texts embedded."""
    encoder = load_encoder(settings, device)
    texts = 0
    start = time.perf_counter()
    with _progress(len(pending), show_progress) as bar:
        for shard in pending:
            data = read_texts(shard.source, field=settings.field, id_field=settings.id_field)
            vectors = encoder.encode(
                data.texts,
                side=settings.side,
                batch_size=batch_size,
                dtype=settings.dtype,
                compile=compile,
            )
            write_vectors(out / shard.name, vectors, data.ids)
            texts += len(data.texts)
            bar.set_postfix(texts=texts, rate=f"{texts / (time.perf_counter() - start):,.0f}/s")
            bar.update(1)
    return texts


# ---------------------------------------------------------------------------------- Ray
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


def _import_ray():
    """The `ray` module with Ray Data, or the one-line error that says how to install it."""
    try:
        import ray.data
    except ImportError:
        raise InputError(
            "--engine ray needs Ray: install cpt-embed[ray] (pip install 'cpt-embed[ray]')"
        ) from None
    return ray


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator:
    """The `ray` module connected to a cluster (`address`, or a local one), disconnected
    afterwards if this connected it; errors the user can fix become one-line errors."""
    ray = _import_ray()
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


def _embed_ray(
    ray,
    pending: list[Shard],
    out: Path,
    settings: EmbedSettings,
    batch_size: int,
    device: str | None,
    compile: bool,
    actors: int,
    show_progress: bool,
) -> int:
    """Ray Data over the texts of `pending` on the connected cluster: tasks read the shards,
    an actor pool embeds them, and this process writes each shard as soon as all its rows
    are back; the number of texts embedded."""
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
    partial: dict[int, _PartialShard] = {}
    texts = 0
    start = time.perf_counter()
    with _progress(len(pending), show_progress) as bar:
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            for index in np.unique(batch["shard"]):
                rows = batch["shard"] == index
                count = int(batch["count"][rows][0])
                vectors = np.asarray(batch["embedding"][rows], dtype=np.float32)
                part = partial.setdefault(int(index), _PartialShard(count, vectors.shape[1]))
                part.add(batch["row"][rows], batch["id"][rows], vectors)
                if part.done:
                    shard = pending[int(index)]
                    write_vectors(out / shard.name, part.vectors, part.ids)
                    del partial[int(index)]
                    texts += count
                    bar.set_postfix(
                        texts=texts, rate=f"{texts / (time.perf_counter() - start):,.0f}/s"
                    )
                    bar.update(1)
    if partial:  # Ray lost rows: never expected, but never write an incomplete shard
        names = ", ".join(pending[i].name for i in sorted(partial))
        raise RuntimeError(f"incomplete shards after the Ray run: {names}; run again")
    return texts


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
