"""schemathesis against `cpt serve` (with an index and an API key): requests generated from
/openapi.json, valid and not, pass its default checks: no 5xx, every status and header
documented, every answer in its documented schema and content type, valid bodies accepted,
invalid ones refused, the key enforced."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from processes import cpt_serve

from cpt_embed.search.build import build_index

pytest.importorskip("schemathesis")

# Examples per operation: about a minute on 2 cores (CPT_SCHEMATHESIS_EXAMPLES for more).
EXAMPLES = int(os.environ.get("CPT_SCHEMATHESIS_EXAMPLES", "100"))


@pytest.mark.slow
def test_schemathesis_finds_nothing_wrong_with_the_api(encoder, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "util.py").write_text('def parse(text):\n    """Parse JSON text."""\n    return 1\n')
    (notes / "cooking.md").write_text("# Bread\n\nBoil the water, then fold the dough.\n")
    build_index([notes], tmp_path / "index", encoder, model_name="default")
    options = ("--index", str(tmp_path / "index"))
    with cpt_serve(*options, env={"CPT_API_KEY": "k3y"}) as (_, url):
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json"]
            + ["--max-examples", str(EXAMPLES), "--seed", "27", "--no-color"]
            + ["--header", "Authorization: Bearer k3y", "--generation-database", "none"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    print(summary)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary
