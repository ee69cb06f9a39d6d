"""The stage order of ../shared/DESIGN.md, read from the source with Python's ast: data flows
one way, so no stage imports one above it (lazy imports inside functions and imports for
type checking count too), and no module or function outgrows its room."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cpt_embed"
STAGES = ("data", "model", "curate", "train", "eval", "embed", "search", "serve", "cli")
# What each stage must never import. The shared helpers at the top level (errors, atomic,
# checksums, paths) import no stage and may be imported by all; the package's __init__
# (the facade: `from cpt_embed import Encoder`) may import the model.
FORBIDDEN = {
    "data": {"model", "curate", "train", "eval", "embed", "search", "serve", "cli"},
    "model": {"data", "curate", "train", "eval", "embed", "search", "serve", "cli"},
    "curate": {"train", "eval", "embed", "search", "serve", "cli"},
    "train": {"curate", "eval", "embed", "search", "serve", "cli"},
    "eval": {"curate", "train", "embed", "search", "serve", "cli"},
    "embed": {"curate", "train", "eval", "search", "serve", "cli"},
    "search": {"curate", "train", "eval", "embed", "serve", "cli"},
    "serve": {"curate", "train", "eval", "embed", "cli"},
    "cli": set(),
    "": set(STAGES),
    "facade": set(STAGES) - {"model"},
}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _stage(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    if parts == ("__init__.py",):
        return "facade"
    return parts[0] if len(parts) > 1 else ""


def _imported_stages(path: Path) -> set[tuple[str, int]]:
    """(stage, line) of every cpt_embed stage the module imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cpt_embed" and len(parts) > 1 and parts[1] in STAGES:
                found.add((parts[1], node.lineno))
    return found


def test_every_stage_is_known():
    stages = {_stage(p) for p in _modules()}
    assert stages == set(FORBIDDEN), set(FORBIDDEN) ^ stages


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_stage_imports_one_above_it(path):
    stage = _stage(path)
    wrong = sorted((s, line) for s, line in _imported_stages(path) if s in FORBIDDEN[stage])
    assert not wrong, f"{path.relative_to(SRC)} ({stage or 'top'}) imports {wrong}"


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cpt_embed.eval.suite import evaluate\n"
        "def f():\n    import cpt_embed.serve.app\n    from cpt_embed import train\n"
    )
    assert _imported_stages(module) == {("eval", 3), ("serve", 5), ("train", 6)}


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body after its docstring: a signature is a declarative table
    (a command's typer options), a docstring is prose."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def _long_functions(tree: ast.AST) -> list[tuple[str, int]]:
    return [
        (node.name, _body_lines(node))
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _body_lines(node) > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: over {MAX_MODULE_LINES}"
    long = _long_functions(ast.parse(text))
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_test_files_have_unique_names():
    """pytest imports test modules by their file name alone (the test folders are not
    packages): two files of one name make the whole run fail to collect."""
    names: dict[str, list[str]] = {}
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(Path(__file__).parent)))
    assert not {name: where for name, where in names.items() if len(where) > 1}
