"""The search page's shading of explained hits run in node, where it is installed (the
browser test in test_page.py is the oracle; this one runs without Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from highlighting import CASES, page_script

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_an_explained_hit_is_shaded_by_its_scores_and_escaped():
    program = page_script("highlighting") + (
        "\nconst cases = JSON.parse(require('fs').readFileSync(0, 'utf-8'));"
        "\nprocess.stdout.write(JSON.stringify(cases.map(([text, explanation]) =>"
        " explainedHtml(text, explanation))));"
    )
    done = subprocess.run(
        [NODE, "-e", program],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [expected for _, _, expected in CASES]
