"""Tasks from the user's own folders, in the layouts of the evaluation data
(../shared/data/README.md), named after the folder:

- retrieval or code search, BEIR: corpus.jsonl, queries.jsonl, qrels/test.tsv;
- classification: train.jsonl and test.jsonl (`text` and `label`, or `text1`/`text2` for
  pair tasks), dev.jsonl to choose the probe's C on;
- STS: test.tsv (score, sentence1, sentence2), or a .tsv file given itself.

An optional task.json beside the files declares what the files cannot say:
`{"kind": "retrieval" | "code" | "classification" | "sts", "split": "test",
"protocol": "cv" | "dev" | "folds"}` (code: the retrieval metrics plus the 1,000-candidate
MRR of the paper's Table 7; protocol: how the linear probe chooses C).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from cpt_embed.errors import InputError, missing_path
from cpt_embed.eval.context import Task

KINDS = ("retrieval", "code", "classification", "sts")
PROTOCOLS = ("cv", "dev", "folds")
DECLARATION = "task.json"
LAYOUTS = (
    "a retrieval folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv; a "
    "classification folder train.jsonl and test.jsonl; an STS folder test.tsv "
    "(../shared/data/README.md gives the formats)"
)


def _declared(folder: Path) -> dict[str, str]:
    """The settings of folder/task.json (none without one), each checked."""
    path = folder / DECLARATION
    if not path.is_file():
        return {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err}); fix it or remove it") from None
    if not isinstance(spec, dict):
        raise InputError(f'{path}: must be a JSON object such as {{"kind": "retrieval"}}')
    unknown = sorted(set(spec) - {"kind", "split", "protocol"})
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r}; the keys are kind, split, protocol")
    choices = {"kind": KINDS, "protocol": PROTOCOLS}
    for key, value in spec.items():
        if not isinstance(value, str) or (key in choices and value not in choices[key]):
            allowed = ", ".join(choices.get(key, ("a split name such as test",)))
            raise InputError(f"{path}: {key} {value!r} is not one of {allowed}")
    return spec


def layout_files(kind: str, split: str = "test", protocol: str = "cv") -> list[str]:
    """The files a task of `kind` reads, relative to its folder (one place for the layouts
    of the built-in tasks and of the user's folders)."""
    if kind in ("retrieval", "code"):
        return ["corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"]
    if kind == "classification":
        return ["train.jsonl", f"{split}.jsonl", *(["dev.jsonl"] if protocol == "dev" else [])]
    return [f"{split}.tsv"]


def _inferred(folder: Path, split: str) -> str:
    """The kind the files make: the first layout of which the folder holds any file."""
    for kind in ("retrieval", "classification", "sts"):
        if any((folder / name).is_file() for name in layout_files(kind, split)):
            return kind
    raise InputError(f"{folder}: no evaluation data found; {LAYOUTS}")


def folder_task(path: Path) -> Task:
    """The task of `path` (a folder in one of the layouts, or an STS .tsv file), named after
    it; a folder that fits no layout is an error naming the missing file."""
    from cpt_embed.eval.classification import run_probe
    from cpt_embed.eval.retrieval import run_retrieval
    from cpt_embed.eval.sts import run_sts

    if not path.exists():
        raise missing_path(path)
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".tsv":
            raise InputError(f"{path}: a task is a folder (or an STS .tsv file); {LAYOUTS}")
        return Task(
            path.stem, "sts", functools.partial(run_sts, task=path.stem, source=path), (str(path),)
        )
    spec = _declared(path)
    split = spec.get("split", "test")
    kind = spec.get("kind") or _inferred(path, split)
    protocol = spec.get("protocol") or ("dev" if (path / "dev.jsonl").is_file() else "cv")
    files = layout_files(kind, split, protocol)
    for name in files:
        if not (path / name).is_file():
            raise InputError(f"{path / name}: missing, and a {kind} folder needs it; {LAYOUTS}")
    name = path.name
    if kind in ("retrieval", "code"):
        run = functools.partial(run_retrieval, task=name, folder=path, group=kind, split=split)
    elif kind == "classification":
        run = functools.partial(run_probe, task=name, folder=path, protocol=protocol, split=split)
    else:
        run = functools.partial(run_sts, task=name, source=path / files[0])
    return Task(name, kind, run, tuple(str(path / f) for f in files))
