"""Embedding a corpus: one file of texts into one vector file, or many shards into a folder
of Parquet files (one per input shard), by one code path: read the texts, encode them,
write the vectors atomically.

A corpus too large for one file comes as shards (JSONL or Parquet files). Each output shard
is named after its input, so an interrupted run leaves whole shards only, and a re-run
skips them: the work lost to a crash is at most the shards in flight. A manifest in the
output folder records the settings that shape the vectors; a re-run with other settings
would mix two kinds of vectors in one folder, so it is refused.

Two engines for shards: `local` embeds shard after shard in this process (no Ray import);
`ray` (`ray_engine.py`) runs Ray Data with a pool of actors, for several GPUs or machines.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_file, check_output_file
from cpt_embed.data.files import is_stream
from cpt_embed.data.readers import TEXT_SUFFIXES, read_texts
from cpt_embed.data.vectors import check_vector_path, write_vectors
from cpt_embed.errors import InputError, missing_path
from cpt_embed.model.config import Side
from cpt_embed.model.runtime import COMPILE_FROM

if TYPE_CHECKING:  # torch loads with the model, after the inputs are checked
    from cpt_embed.model import Encoder

MANIFEST = "manifest.json"
ENGINES = ("local", "ray")
# A file of at most this many characters (about one CPU batch of 4,096 tokens) is embedded
# on one thread: a second saves a few milliseconds on so little work, but stalls at each of
# a forward pass's ~150 parallel regions while another process holds the other core (20
# texts: 0.14 s on one thread, 2-10 s on two, same vectors).
ONE_THREAD_CHARS = 16_384


@dataclass(frozen=True)
class EmbedSettings:
    """What decides the vectors of a corpus; recorded in a shard folder's manifest."""

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
class EmbedRun:
    """What a run did: shards found (1 for a single file), shards skipped as done, texts
    embedded, their dimension (0 when nothing was embedded) and seconds: those the progress
    bar counts, from before the first text is encoded to the last vectors written (loading
    the model not counted, but for Ray actors, which load theirs as the bar runs)."""

    shards: int
    skipped: int
    texts: int
    dim: int
    seconds: float


def is_shard_folder(output: str | os.PathLike) -> bool:
    """True where `output` names a folder of vector shards (an existing folder, or a path
    without a suffix), not one .npy or .parquet file."""
    path = Path(output)
    return path.is_dir() or not path.suffix


def load_encoder(settings: EmbedSettings, device: str | None) -> Encoder:
    """The Encoder of `settings` (its max_length applied) on `device` (default: auto)."""
    from cpt_embed.model import Encoder

    overrides = {"max_length": settings.max_length} if settings.max_length else {}
    return Encoder.load(settings.model, device=device, **overrides)


def embed_corpus(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: EmbedSettings,
    *,
    engine: str = "local",
    batch_size: int = 128,
    device: str | None = None,
    compile: bool | None = None,
    actors: int = 1,
    ray_address: str | None = None,
    show_progress: bool = False,
) -> EmbedRun:
    """Embed `inputs` into `output`: a folder (see `is_shard_folder`) gets one Parquet
    file per input shard (`embed_shards`), a .npy or .parquet file the texts of one input
    (`embed_file`). `compile=None` compiles a single file of COMPILE_FROM texts or more."""
    if is_shard_folder(output):
        return embed_shards(
            inputs,
            output,
            settings,
            engine=engine,
            batch_size=batch_size,
            device=device,
            compile=bool(compile),
            actors=actors,
            ray_address=ray_address,
            show_progress=show_progress,
        )
    check_vector_path(output)
    if len(inputs) != 1 or Path(inputs[0]).is_dir():
        raise InputError(
            f"{output}: several inputs or a folder give one .parquet per shard; "
            "pass a folder (no suffix) as -o"
        )
    if engine != "local":
        raise InputError(f"--engine {engine} writes shards; pass a folder (no suffix) as -o")
    return embed_file(
        inputs[0],
        output,
        settings,
        batch_size=batch_size,
        device=device,
        compile=compile,
        show_progress=show_progress,
    )


def embed_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    settings: EmbedSettings,
    *,
    batch_size: int = 128,
    device: str | None = None,
    compile: bool | None = None,
    show_progress: bool = False,
) -> EmbedRun:
    """Embed the texts of one file (`-` for stdin lines) into `output` (.npy or .parquet);
    the run's seconds are those of encoding and writing, not of loading the model. A
    source without texts is an error before the model loads. A small file is embedded on
    one CPU thread (ONE_THREAD_CHARS), torch's thread count restored after."""
    target = check_output_file(check_vector_path(output), "-o")
    data = read_texts(source, field=settings.field, id_field=settings.id_field)
    if not data.texts:
        if os.fspath(source) == "-":
            raise InputError("<stdin>: no texts to embed (stdin was empty); pipe one text a line")
        raise InputError(
            f"{source}: no texts to embed (an empty file, or no records); pass a file that "
            "holds at least one text"
        )
    encoder = load_encoder(settings, device)
    from cpt_embed.model.runtime.devices import cpu_threads

    if compile is None:
        compile = len(data.texts) >= COMPILE_FROM
    small = sum(map(len, data.texts)) <= ONE_THREAD_CHARS
    started = time.perf_counter()
    with cpu_threads(1 if small else None):
        _encode_and_write(encoder, data, target, settings, batch_size, compile, show_progress)
    return EmbedRun(1, 0, len(data.texts), encoder.dim, time.perf_counter() - started)


def _encode_and_write(
    encoder: Encoder,
    data,
    target: Path,
    settings: EmbedSettings,
    batch_size: int,
    compile: bool,
    show_progress: bool = False,
) -> None:
    """The one step every local run takes: encode `data.texts`, write them with their ids."""
    vectors = encoder.encode(
        data.texts,
        side=settings.side,
        batch_size=batch_size,
        dtype=settings.dtype,
        compile=compile,
        show_progress=show_progress,
    )
    write_vectors(target, vectors, data.ids)


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
    for item in inputs:
        shards += _shards_of(os.fspath(item), out_dir)
    seen: dict[str, Path] = {}
    for shard in shards:
        if shard.name in seen:
            raise InputError(
                f"{seen[shard.name]} and {shard.source} would both write {shard.name}; "
                "rename one or embed them into different folders"
            )
        seen[shard.name] = shard.source
    return shards


def _shards_of(text: str, out_dir: Path) -> list[Shard]:
    """The shards of one input: a file, a folder (searched recursively) or a glob."""
    path = Path(text)
    if text == "-":
        raise InputError("stdin cannot be split into shards; write it to a file first")
    if path.is_dir():
        root, out = path.resolve(), out_dir.resolve()
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
        return [
            Shard(p, p.relative_to(path).with_name(f"{_text_stem(p)}.parquet").as_posix())
            for p in found
        ]
    if path.is_file() or is_stream(path):  # named: a pipe is read as a stream
        files = [path]
    elif glob.has_magic(text):
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        if not files:
            raise InputError(f"{text}: no files match")
    else:
        raise missing_path(path)
    shards = []
    for file in files:
        stem = _text_stem(file)
        if stem is None:
            raise InputError(f"{file}: not a shard; use .jsonl, .parquet or .txt (optionally .gz)")
        shards.append(Shard(file, f"{stem}.parquet"))
    return shards


def open_output(out_dir: Path, settings: EmbedSettings) -> None:
    """Create `out_dir` with its manifest, or check that the one there records `settings`;
    our manifest beside no vectors (a run that stopped before its first shard) is replaced."""
    manifest = out_dir / MANIFEST
    current = settings.recorded()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(
            f"{out_dir}: a file; -o takes a .npy or .parquet file, or a folder for shards"
        )
    vectors = out_dir.is_dir() and any(out_dir.rglob("*.parquet"))
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{manifest}: unreadable ({err}); use another folder") from None
        if not isinstance(recorded, dict) or "model" not in recorded:
            raise InputError(f"{manifest}: not a manifest of vector shards; use another folder")
        changed = [
            f"{key} {recorded.get(key)!r} -> {value!r}"
            for key, value in current.items()
            if recorded.get(key) != value
        ]
        if changed and vectors:
            raise InputError(
                f"{out_dir} holds vectors made with other settings ({'; '.join(changed)}); "
                "use another output folder or delete this one"
            )
        if not changed:
            return
    elif vectors:
        raise InputError(
            f"{out_dir} holds .parquet files but no {MANIFEST}; use a new or empty folder"
        )
    with atomic_file(manifest, "w") as handle:
        json.dump(current, handle, indent=2)
        handle.write("\n")


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
) -> EmbedRun:
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
        from cpt_embed.embed.ray_engine import embed_with_ray, import_ray

        import_ray()  # before any work: a missing extra is a one-line error
    out = Path(out_dir)
    shards = find_shards(inputs, out)
    open_output(out, settings)
    pending = [s for s in shards if not (out / s.name).is_file()]
    texts, dim, seconds = 0, 0, 0.0
    if pending and engine == "local":
        encoder = load_encoder(settings, device)
        texts, dim, seconds = _embed_local(
            encoder, pending, out, settings, batch_size, compile, show_progress
        )
    elif pending:
        texts, dim, seconds = embed_with_ray(
            pending, out, settings, batch_size, device, compile, actors, ray_address, show_progress
        )
    return EmbedRun(len(shards), len(shards) - len(pending), texts, dim, seconds)


def progress(shards: int, show: bool) -> tqdm:
    """The progress bar of a shard run: shards done, with texts and rate as its postfix
    (the rate of texts over the seconds since the bar started)."""
    return tqdm(total=shards, unit="shard", desc="embedding", disable=not show, dynamic_ncols=True)


def _embed_local(
    encoder: Encoder,
    pending: list[Shard],
    out: Path,
    settings: EmbedSettings,
    batch_size: int,
    compile: bool,
    show_progress: bool,
) -> tuple[int, int, float]:
    """Shard after shard in this process; the number of texts embedded, their dim and the
    seconds the progress bar counted."""
    texts = 0
    start = time.perf_counter()
    with progress(len(pending), show_progress) as bar:
        for shard in pending:
            data = read_texts(shard.source, field=settings.field, id_field=settings.id_field)
            _encode_and_write(encoder, data, out / shard.name, settings, batch_size, compile)
            texts += len(data.texts)
            bar.set_postfix(texts=texts, rate=f"{texts / (time.perf_counter() - start):,.0f}/s")
            bar.update(1)
    return texts, encoder.dim, time.perf_counter() - start
