"""The `cpt` app run in one fresh process: help and bad inputs are checked where torch has
not been imported (typer's CliRunner forces 80 columns, and a test process has imported
torch long before)."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs the `cpt` app on each (columns, command line) in this one process; prints what each
# wrote and exited with, and which of the named modules the process imported.
_PROBE = """
import contextlib, io, json, os, sys
from typer.main import get_command
from cpt_embed.cli import app
runs = []
for columns, argv in json.loads(sys.argv[1]):
    os.environ["COLUMNS"] = str(columns)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            get_command(app).main(argv, prog_name="cpt")
        except SystemExit as stop:
            code = stop.code
    runs.append({"code": code, "output": out.getvalue()})
loaded = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
print(json.dumps({"runs": runs, "loaded": loaded}))
"""


def run_cpt(lines: list[tuple[int, list[str]]], modules: list[str]) -> tuple[list[dict], list[str]]:
    """Each (columns, command line)'s {"code", "output"}, run in one fresh process, and
    which of `modules` that process imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(lines), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["runs"], report["loaded"]
