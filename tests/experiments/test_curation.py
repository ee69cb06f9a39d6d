"""experiments/curation.py's sample (whole repositories, capped) and table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments"))

import curation  # noqa: E402


def test_the_sample_takes_whole_repositories_up_to_the_cap(tmp_path):
    mined = tmp_path / "mined.jsonl"
    rows = [
        {"x": f"doc {r} {i}", "y": f"code {r} {i}", "repo": f"r{r}"}
        for r in range(6)
        for i in range(10 * (r + 1))
    ]
    mined.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = curation.sample(mined, tmp_path / "out", n_pairs=45, per_repo=12, seed=0)
    chosen = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert len(chosen) == 45
    per_repo: dict[str, int] = {}
    for record in chosen:
        per_repo[record["repo"]] = per_repo.get(record["repo"], 0) + 1
    # every repository but the last one taken (cut at 45 pairs) gives min(its size, 12)
    short = [r for r, c in per_repo.items() if c != min(12, 10 * (int(r[1:]) + 1))]
    assert len(short) <= 1 and len(per_repo) >= 4
    again = curation.sample(mined, tmp_path / "out", n_pairs=45, per_repo=12, seed=0)
    assert (again / "pairs.jsonl").read_text() == (folder / "pairs.jsonl").read_text()


def test_the_table_gives_each_arms_mean_and_seeds():
    labels = [label for _, _, label in curation.COLUMNS]
    start = dict.fromkeys(labels, 50.0)
    runs = {
        curation.run_name("raw", 0): dict.fromkeys(labels, 60.0),
        curation.run_name("raw", 1): dict.fromkeys(labels, 62.0),
    }
    text = curation.table(start, runs, [0, 1])
    assert "| raw | 61.00 (60.00, 62.00) |" in text
    assert "filtered" not in text  # arms not run are left out
