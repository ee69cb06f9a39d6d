"""Pair shards: JSONL(.gz) or Parquet files of at most `shard_size` pairs plus a manifest,
each written atomically, so an interrupted run leaves whole shards and a manifest that says
how far the input was consumed; `--resume` goes on from there."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpt_embed.atomic import atomic_file, check_output_folder
from cpt_embed.data.jsonl import read_jsonl
from cpt_embed.errors import InputError, first_line, missing_path

MANIFEST = "manifest.json"
FORMATS = ("jsonl.gz", "jsonl", "parquet")


def _write_shard(path: Path, records: list[dict], fmt: str) -> None:
    with atomic_file(path) as handle:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), handle)
            return
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        if fmt == "jsonl.gz":
            # mtime=0: the same pairs give the same bytes (deterministic output)
            with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as gz:
                gz.write(lines)
        else:
            handle.write(lines)


def read_shard(path: Path) -> Iterator[dict]:
    """The records of one shard file; a damaged one is an error naming it (and the line)."""
    if path.name.endswith(".parquet"):
        yield from _parquet_records(path)
    else:
        for _, record in read_jsonl(path):
            yield record


def holds_pairs(path: Path) -> bool:
    """Whether a shard file holds a record, reading no further than the first (a Parquet
    file: its footer); a damaged file is an error naming it."""
    if not path.name.endswith(".parquet"):
        with contextlib.closing(read_shard(path)) as records:
            return next(records, None) is not None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows > 0
    except pa.ArrowException as err:
        raise InputError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or first_line(err)})") from None


def _parquet_records(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except pa.ArrowException as err:
        raise InputError(f"{path}: not a readable Parquet file ({first_line(err)})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or first_line(err)})") from None


def _manifest(path: Path) -> dict[str, Any]:
    """The manifest at `path`, checked enough that its readers cannot trip over it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(f"{path}: unreadable ({err}); mine into a new folder") from None
    shards = data.get("shards") if isinstance(data, dict) else None
    if not (
        isinstance(shards, list)
        and all(isinstance(s, dict) and isinstance(s.get("file"), str) for s in shards)
        and {"settings", "position", "counts", "complete"} <= data.keys()
    ):
        raise InputError(f"{path}: not a manifest of pair shards; mine into a new folder")
    return data


class ShardWriter:
    """Collects pairs and writes a shard whenever `shard_size` pairs are waiting at an input
    boundary (`checkpoint`); the manifest records the shards and the input position."""

    def __init__(
        self,
        out_dir: Path,
        *,
        fmt: str,
        shard_size: int,
        settings: dict[str, Any],
        resume: bool = False,
    ) -> None:
        if fmt not in FORMATS:
            raise InputError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
        if shard_size < 1:
            raise InputError(f"shard size must be >= 1, got {shard_size}")
        self.out_dir, self.fmt, self.shard_size = Path(out_dir), fmt, shard_size
        self.settings = settings
        self.shards: list[dict[str, Any]] = []
        self.position = 0
        self.counts: dict[str, int] = {}
        self.pending: list[dict] = []
        fresh = self._take_up(resume)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stale in filter(_stale, self.out_dir.iterdir()):
            stale.unlink()
        if fresh:
            # before any shard: a crash after the first shard then still resumes (the
            # manifest does not list it, so it is written again)
            self._write_manifest(complete=False)

    def _take_up(self, resume: bool) -> bool:
        """Check what `out_dir` holds before any work; take up the run recorded there when
        resuming. True for a fresh start: no manifest yet, or one of a run that wrote no
        pair and left nothing else (whatever its settings: nothing is lost)."""
        out, manifest = self.out_dir, self.out_dir / MANIFEST
        check_output_folder(out)
        if not manifest.is_file():
            if out.exists() and any(not _stale(p) for p in out.iterdir()):
                raise InputError(
                    f"{out} holds {_entries(out)} but no {MANIFEST}, so no pairs of ours; "
                    "choose a new or empty output folder"
                )
            return True
        previous = _manifest(manifest)
        others = [p for p in out.iterdir() if p.name != MANIFEST and not _stale(p)]
        if not previous["shards"] and not others:
            return True
        if not resume:
            pairs, shards = previous.get("pairs", 0), len(previous["shards"])
            run = "a finished" if previous["complete"] else "an unfinished"
            raise InputError(
                f"{out} holds {pairs:,} pair{'s' * (pairs != 1)} in {shards} "
                f"shard{'s' * (shards != 1)} of {run} run ({_entries(out)}); pass --resume "
                "to go on with the same settings, or choose another output folder"
            )
        if previous["settings"] != self.settings:
            changed = sorted(
                k
                for k in self.settings | previous["settings"]
                if self.settings.get(k) != previous["settings"].get(k)
            )
            raise InputError(
                f"{manifest}: --resume with different settings ({', '.join(changed)}); "
                "use the original ones or a new output folder"
            )
        self.shards, self.position = previous["shards"], previous["position"]
        self.counts = previous["counts"]
        return False

    @property
    def complete(self) -> bool:
        return shards_complete(self.out_dir)

    def written(self) -> Iterator[dict]:
        """Records of the shards already written (to rebuild dedupe state on resume)."""
        for shard in self.shards:
            yield from read_shard(self.out_dir / shard["file"])

    def add(self, record: dict) -> None:
        self.pending.append(record)

    def checkpoint(self, position: int, counts: dict[str, int], force: bool = False) -> None:
        """Input up to `position` is processed; write a shard if enough pairs wait."""
        if len(self.pending) >= self.shard_size or (force and self.pending):
            name = f"pairs-{len(self.shards):05d}.{self.fmt}"
            _write_shard(self.out_dir / name, self.pending, self.fmt)
            self.shards.append({"file": name, "pairs": len(self.pending)})
            self.pending = []
            self.position, self.counts = position, dict(counts)
            self._write_manifest(complete=False)

    def close(self, position: int, counts: dict[str, int]) -> None:
        """Write what is left and mark the set complete."""
        self.checkpoint(position, counts, force=True)
        self.position, self.counts = position, dict(counts)
        self._write_manifest(complete=True)

    @property
    def pairs(self) -> int:
        return sum(s["pairs"] for s in self.shards) + len(self.pending)

    def _write_manifest(self, complete: bool) -> None:
        data = {
            "settings": self.settings,
            "shards": self.shards,
            "position": self.position,
            "counts": self.counts,
            "pairs": sum(s["pairs"] for s in self.shards),
            "complete": complete,
        }
        with atomic_file(self.out_dir / MANIFEST, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")


def _entries(folder: Path) -> str:
    """What a folder holds, for a message: how many entries, and the first names."""
    names = sorted(p.name for p in folder.iterdir() if not _stale(p))
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def _stale(path: Path) -> bool:
    """A temporary file of a write a kill interrupted (see atomic_file)."""
    return path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file()


def shards_complete(out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished shard set (its manifest says so)."""
    manifest = Path(out_dir) / MANIFEST
    return manifest.is_file() and bool(_manifest(manifest)["complete"])


def pair_files(path: Path) -> list[Path]:
    """The shard files of a pairs folder (in order), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise missing_path(path, "pairs file or folder")
    manifest = path / MANIFEST
    if manifest.is_file():
        files = [path / s["file"] for s in _manifest(manifest)["shards"]]
        if not files:
            raise InputError(
                f"{path}: a pairs folder whose run wrote no pair (its {MANIFEST} lists no "
                "shards); mine again, or pass another folder"
            )
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise InputError(f"{missing}: listed in {manifest} but missing; mine into a new folder")
        return files
    files = sorted(  # regular files (links followed): a FIFO would block its reader for ever
        p
        for p in path.iterdir()
        if p.name.endswith((".jsonl", ".jsonl.gz", ".parquet")) and p.is_file()
    )
    if not files:
        raise InputError(f"{path}: no pair files (.jsonl, .jsonl.gz, .parquet)")
    return files
