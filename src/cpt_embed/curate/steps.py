"""The two curation commands end to end: check the settings and the output folder, embed
the pairs (cached), decide, and write the pairs that stay."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cpt_embed.curate.consistency import check_filter_settings, consistency_filter
from cpt_embed.curate.negatives import Corpus, NegativeSettings, mine_negatives, own_documents
from cpt_embed.curate.output import CurationReport, write_curated
from cpt_embed.curate.pairs import (
    PairSet,
    check_pairs,
    corpus_texts,
    embed_documents,
    load_pairs,
    records,
)
from cpt_embed.data.shards import ShardWriter
from cpt_embed.errors import InputError, missing_path
from cpt_embed.model.resolve import resolve_model

if TYPE_CHECKING:  # torch loads with the model, after the inputs are checked
    from cpt_embed.model import Encoder


@dataclass(frozen=True)
class Curation:
    """What every curation step shares: the model that scores the pairs (`default`, a
    folder, or an Encoder) with its max length, batch, dtype and device, and how the output
    is written (shard format and size, resuming)."""

    model: str | Encoder = "default"
    max_length: int | None = None
    batch_size: int = 128
    dtype: str = "auto"
    device: str | None = None
    fmt: str = "jsonl.gz"
    shard_size: int = 50_000
    resume: bool = False
    show_progress: bool = True

    def output(self, out_dir: Path, settings: dict[str, Any]) -> ShardWriter:
        """The output's writer, opened before any work so that a folder in the way (or a
        --resume with other settings) fails at once."""
        model = self.model
        name = model if isinstance(model, str) else (model.config.base_model or "encoder")
        settings = {**settings, "model": name, "max_length": self.max_length}
        return ShardWriter(
            out_dir, fmt=self.fmt, shard_size=self.shard_size, settings=settings, resume=self.resume
        )

    def check_model(self) -> None:
        """Resolve the model's name before any output is written (a typo fails at once)."""
        if isinstance(self.model, str):
            resolve_model(self.model)

    def encoder(self) -> Encoder:
        from cpt_embed.model import Encoder

        if isinstance(self.model, Encoder):
            return self.model
        overrides = {"max_length": self.max_length} if self.max_length else {}
        return Encoder.load(self.model, device=self.device, **overrides)

    def pairs(self, source: Path, encoder: Encoder, group_by: str = "repo") -> PairSet:
        """The pairs of `source`, embedded (cached)."""
        return load_pairs(
            source,
            encoder,
            group_by=group_by,
            batch_size=self.batch_size,
            dtype=self.dtype,
            show_progress=self.show_progress,
        )


def filter_pairs(
    source: Path,
    out_dir: Path,
    curation: Curation | None = None,
    *,
    top_k: int = 2,
    pool: int = 1000,
    group_by: str = "repo",
    seed: int = 0,
) -> CurationReport:
    """Keep the pairs of `source` whose y ranks in the top `top_k` for their x among at
    most `pool` documents of their group (curate/consistency.py); write them to `out_dir`."""
    started, curation = time.perf_counter(), curation or Curation()
    check_filter_settings(top_k, pool)
    files = check_pairs(source)
    curation.check_model()
    settings = {"step": "filter", "input": str(source), "top_k": top_k, "pool": pool}
    writer = curation.output(out_dir, {**settings, "group_by": group_by, "seed": seed})
    pairs = curation.pairs(source, curation.encoder(), group_by)
    keep, groups = consistency_filter(pairs, top_k, pool, seed)
    report = CurationReport(Path(out_dir), groups)
    write_curated(writer, files, lambda row, record: record if keep[row] else None, report)
    report.seconds = time.perf_counter() - started
    return report


def add_negatives(
    source: Path,
    out_dir: Path,
    curation: Curation | None = None,
    *,
    settings: NegativeSettings | None = None,
    corpus: Path | None = None,
    corpus_field: str = "text",
    field: str = "negatives",
) -> CurationReport:
    """Give every pair of `source` `settings.num` hard negatives in the list field `field`
    (what `cpt train --hard-negatives FIELD` reads); pairs with too few are left out."""
    started, curation = time.perf_counter(), curation or Curation()
    settings = settings or NegativeSettings()
    settings.check()
    if not field or field in ("x", "y"):
        raise InputError(f"--field {field!r}: name a new field for the negatives, e.g. negatives")
    if corpus is not None and not Path(corpus).is_file():
        raise missing_path(Path(corpus), "corpus file")
    files = check_pairs(source)
    texts = None if corpus is None else corpus_texts(corpus, corpus_field)
    curation.check_model()
    manifest = {"step": "negatives", "input": str(source), "field": field, **vars(settings)}
    writer = curation.output(out_dir, {**manifest, "corpus": str(corpus) if corpus else None})
    encoder = curation.encoder()
    pairs = curation.pairs(source, encoder)
    if texts is None:
        documents, rows = own_documents(pairs)
    else:
        vectors, hashes = embed_documents(
            corpus,
            texts,
            encoder,
            field=corpus_field,
            batch_size=curation.batch_size,
            dtype=curation.dtype,
            show_progress=curation.show_progress,
        )
        keys, first = np.unique(pairs.key_of(hashes), return_index=True)  # equal texts once
        documents, texts = Corpus(vectors[first], keys), [texts[i] for i in first]
    chosen, groups = mine_negatives(pairs, documents, settings)
    needed = {i for picked in chosen if picked for i in picked}
    if texts is None:
        negative_text = _documents_of(files, {int(rows[i]): i for i in needed})
    else:
        negative_text = {i: texts[i] for i in needed}
    report = CurationReport(Path(out_dir), groups)

    def decide(row: int, record: dict) -> dict | None:
        picked = chosen[row]
        return None if picked is None else {**record, field: [negative_text[i] for i in picked]}

    write_curated(writer, files, decide, report)
    report.seconds = time.perf_counter() - started
    return report


def _documents_of(files: list[Path], wanted: dict[int, int]) -> dict[int, str]:
    """{corpus index: the y text of its pair row} for `wanted` (row -> index), one pass."""
    return {wanted[row]: r["y"] for row, r in enumerate(records(files)) if row in wanted}
