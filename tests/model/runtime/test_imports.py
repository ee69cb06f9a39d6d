"""transformers imported lean: `transformers.models` gets the import structure its own
scan would compute, and a model loads without scipy.optimize, whose Hungarian matcher
still works when called."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cpt_embed.model.runtime.imports import unprefixed

FRESH = """
import json, sys
import numpy as np
import transformers.utils
from cpt_embed import Encoder

encoder = Encoder.load(sys.argv[1])
encoder.backbone  # transformers' model, which Encoder.load leaves for first use (model/lazy.py)
encoder.encode(["a text"], dtype="bf16")
scipy_before = "scipy.optimize" in sys.modules
deferred = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(getattr(module, "linear_sum_assignment", None), "__module__", "")
    == "cpt_embed.model.runtime.imports"
)
real = transformers.utils.is_scipy_available
rows, cols = sys.modules[deferred[0]].linear_sum_assignment(np.array([[5.0, 1.0], [1.0, 5.0]]))
print(json.dumps({
    "scipy_before": scipy_before,
    "deferred": {name: sys.modules[name].__file__ for name in deferred},
    "checks": all(sys.modules[name].is_scipy_available is real for name in deferred),
    "assignment": cols.tolist(),
}))
"""


def test_the_models_structure_is_the_one_transformers_scans():
    from transformers.utils import import_utils

    folder = Path(sys.modules["transformers"].__file__).parent / "models"
    package = import_utils.define_import_structure(folder, prefix="models")
    assert any(not name.startswith("models.") for modules in package.values() for name in modules)
    scanned = import_utils.define_import_structure.__wrapped__(os.fspath(folder / "__init__.py"))
    derived = unprefixed(package)
    assert derived == scanned
    assert list(derived) == list(scanned)
    assert all(list(derived[key]) == list(scanned[key]) for key in scanned)


def test_a_model_loads_without_scipy_and_the_matcher_still_works(tiny_bert):
    done = subprocess.run(
        [sys.executable, "-c", FRESH, str(tiny_bert)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["scipy_before"] is False
    assert report["deferred"] and report["checks"]
    assert report["assignment"] == [1, 0]  # the assignment of least cost
    # each module that looked for scipy meanwhile imports only the matcher from it
    for path in report["deferred"].values():
        source = Path(path).read_text(encoding="utf-8")
        imports = re.findall(r"^\s*(?:from scipy\S* import .+|import scipy.*)$", source, re.M)
        assert [line.strip() for line in imports] == [
            "from scipy.optimize import linear_sum_assignment"
        ], path
