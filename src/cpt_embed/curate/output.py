"""Writing curated pairs: the input records in order, each dropped or rewritten by a
decision made beforehand, into pair shards with a manifest (data/shards.py), so the output
is resumable, atomic shard by shard, and readable by `cpt train` like mined pairs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cpt_embed.atomic import atomic_file
from cpt_embed.curate.pairs import records
from cpt_embed.data.shards import ShardWriter

REPORT = "curation.json"


@dataclass
class GroupCounts:
    """What a curation step did to one group's pairs."""

    kept: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class CurationReport:
    """Counts of a curation step, overall and per group, and where it wrote."""

    out_dir: Path
    groups: dict[str, GroupCounts]
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return sum(g.kept for g in self.groups.values())

    @property
    def dropped(self) -> int:
        return sum(g.dropped for g in self.groups.values())

    def counts(self) -> dict[str, int]:
        """Totals: kept, dropped, and the pairs dropped for each reason."""
        totals = {"kept": self.kept, "dropped": self.dropped}
        for group in self.groups.values():
            for reason, n in group.reasons.items():
                totals[reason] = totals.get(reason, 0) + n
        return totals


def write_curated(
    writer: ShardWriter,
    files: list[Path],
    decide: Callable[[int, dict], dict | None],
    report: CurationReport,
) -> None:
    """Write `decide(row, record)` for every input record that it does not drop (None);
    a resumed run skips the rows the manifest says are done. The per-group counts go to
    curation.json beside the manifest."""
    counts = report.counts()
    if not writer.complete:
        done = writer.position
        for row, record in enumerate(records(files)):
            if row < done:
                continue
            kept = decide(row, record)
            if kept is not None:
                writer.add(kept)
            writer.checkpoint(row + 1, counts)
        writer.close(max(done, row + 1), counts)
    data = {
        "settings": writer.settings,
        "kept": report.kept,
        "dropped": report.dropped,
        "groups": {name: vars(g) for name, g in sorted(report.groups.items())},
    }
    with atomic_file(writer.out_dir / REPORT, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
