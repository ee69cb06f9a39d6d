"""transformers imported without two pieces of work that loading a model never uses.

- `import transformers` scans the source of its ~570 model folders for the names each
  exports; `transformers.models`, imported on the way to any config, tokenizer or model
  class, scans them all again (the first scan's cache keeps 128 folders). `import_models`
  gives it the structure the first scan built, with the prefix "models." taken off, which
  is what the second scan computes.
- `transformers.modeling_utils` imports its object-detection losses, which import
  scipy.optimize (and with it scipy.linalg and scipy.sparse) for their Hungarian matcher.
  `import_modeling` imports it with scipy hidden, then gives those modules the real
  availability check back and a `linear_sum_assignment` that imports scipy when called.

Together about 0.5 s of CPU time in a fresh `cpt embed` (docs/benchmarks.md). Both fall
back to the plain import where transformers is not built as expected.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PREFIX = "models."


def import_models() -> None:
    """Import `transformers.models`, reusing the scan of `import transformers`."""
    if "transformers.models" in sys.modules:
        return
    import transformers
    from transformers.utils import import_utils

    scan = getattr(import_utils, "define_import_structure", None)
    if scan is None or not hasattr(scan, "cache_info"):
        importlib.import_module("transformers.models")
        return
    folder = Path(transformers.__file__).parent / "models"
    init = os.fspath(folder / "__init__.py")

    def reuse(module_path: Any, prefix: str | None = None) -> dict:
        if prefix is None and os.fspath(module_path) == init:
            structure = unprefixed(scan(folder, prefix="models"))
            if structure:
                return structure
        return scan(module_path, prefix)

    import_utils.define_import_structure = reuse
    try:
        importlib.import_module("transformers.models")
    finally:
        import_utils.define_import_structure = scan


def unprefixed(structure: dict) -> dict:
    """The import structure of `transformers.models` from the package's, whose module names
    start with "models." (the package adds its own modules, which do not)."""
    return {
        backends: {
            name.removeprefix(_PREFIX): set(objects)
            for name, objects in modules.items()
            if name.startswith(_PREFIX)
        }
        for backends, modules in structure.items()
    }


def import_modeling() -> None:
    """Import `transformers.modeling_utils` (model classes need it) without scipy.optimize."""
    if "transformers.modeling_utils" in sys.modules:
        return
    import transformers.utils as utils

    available = getattr(utils, "is_scipy_available", None)
    if available is None or not available():
        importlib.import_module("transformers.modeling_utils")
        return

    def hidden() -> bool:
        return False

    before = set(sys.modules)
    utils.is_scipy_available = hidden
    try:
        importlib.import_module("transformers.modeling_utils")
    finally:
        utils.is_scipy_available = available
        for name in set(sys.modules) - before:
            module = sys.modules.get(name)
            if getattr(module, "is_scipy_available", None) is hidden:
                module.is_scipy_available = available
                if not hasattr(module, "linear_sum_assignment"):
                    module.linear_sum_assignment = _deferred("linear_sum_assignment")


def _deferred(name: str) -> Callable[..., Any]:
    """scipy.optimize's function `name`, imported on the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        from scipy import optimize

        return getattr(optimize, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call
