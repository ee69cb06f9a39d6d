"""Tasks from the user's own folders, in the layouts of the evaluation data
(../shared/data/README.md), named after the folder:

- retrieval or code search, BEIR: corpus.jsonl, queries.jsonl, qrels/test.tsv;
- classification: train.jsonl and test.jsonl (`text` and `label`, or `text1`/`text2` for
  pair tasks), dev.jsonl to choose the probe's C on;
- STS: test.tsv (score, sentence1, sentence2), or a .tsv file given itself.

An optional task.json beside the files declares what the files cannot say, every key
optional:

    {"kind": "retrieval" | "code" | "classification" | "sts",
     "split": "test",
     "protocol": "cv" | "dev" | "folds",
     "metrics": ["ndcg@10", "recall@100"],
     "sides": {"queries": "query", "corpus": "document"}}

kind: code adds the 1,000-candidate MRR of the paper's Table 7 to the retrieval metrics;
protocol: how the linear probe chooses C; metrics: the ones to report, the first the
headline (retrieval: ndcg@10, mrr@10, recall@100, map@100, code also
mrr_999_distractors; classification: accuracy, f1; sts: spearman); sides: the side each
field is embedded on (retrieval: queries and corpus; classification and STS: text, for
both texts; default: queries on the query side, documents on the document side, the
texts of symmetric tasks on `cpt eval --symmetric-side`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path

from cpt_embed.errors import InputError, missing_path
from cpt_embed.eval.context import Context, Task, TaskResult

KINDS = ("retrieval", "code", "classification", "sts")
PROTOCOLS = ("cv", "dev", "folds")
DECLARATION = "task.json"
KEYS = ("kind", "split", "protocol", "metrics", "sides")
LAYOUTS = (
    "a retrieval folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv; a "
    "classification folder train.jsonl and test.jsonl; an STS folder test.tsv "
    "(../shared/data/README.md gives the formats)"
)


def _metrics(kind: str) -> tuple[str, ...]:
    from cpt_embed.eval.classification import METRICS as CLASSIFICATION
    from cpt_embed.eval.retrieval import CODE_METRICS, METRICS

    return {
        "retrieval": METRICS,
        "code": CODE_METRICS,
        "classification": CLASSIFICATION,
        "sts": ("spearman",),
    }[kind]


def _fields(kind: str) -> tuple[str, ...]:
    return ("queries", "corpus") if kind in ("retrieval", "code") else ("text",)


def _check(path: Path, key: str, value: object) -> None:
    """The type and choices of one declared setting (names are checked against the kind
    once it is known)."""
    choices = {"kind": KINDS, "protocol": PROTOCOLS}
    if key in ("kind", "split", "protocol"):
        if not isinstance(value, str) or (key in choices and value not in choices[key]):
            allowed = ", ".join(choices.get(key, ("a split name such as test",)))
            raise InputError(f"{path}: {key} {value!r} is not one of {allowed}")
    elif key == "metrics":
        if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
            raise InputError(
                f'{path}: metrics {value!r} must be a list such as ["ndcg@10", "recall@100"] '
                "(the first is the headline)"
            )
    elif not isinstance(value, dict) or any(v not in ("query", "document") for v in value.values()):
        raise InputError(
            f'{path}: sides {value!r} must map fields to "query" or "document", such as '
            '{"queries": "query", "corpus": "document"}'
        )


def _check_names(path: Path, kind: str, key: str, names: list[str], known: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(
            f"{path}: {key} of a {kind} task are {', '.join(known)}, not {', '.join(unknown)}"
        )


def _declared(folder: Path) -> dict:
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
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    for key, value in spec.items():
        _check(path, key, value)
    return spec


def _with_declared(
    ctx: Context, run: Callable[[Context], TaskResult], metrics: list[str] | None, side: str | None
) -> TaskResult:
    """`run` with the symmetric side and the metrics task.json declares."""
    result = run(dataclasses.replace(ctx, symmetric_side=side) if side else ctx)
    if metrics:
        result.scores = {m: result.scores[m] for m in metrics}
        result.metric = metrics[0]
    return result


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
    name, metrics, sides = path.name, spec.get("metrics"), spec.get("sides", {})
    _check_names(path / DECLARATION, kind, "metrics", metrics or [], _metrics(kind))
    _check_names(path / DECLARATION, kind, "sides", list(sides), _fields(kind))
    if kind in ("retrieval", "code"):
        run = functools.partial(
            run_retrieval,
            task=name,
            folder=path,
            group=kind,
            split=split,
            sides=(sides.get("queries", "query"), sides.get("corpus", "document")),
        )
    elif kind == "classification":
        f1 = "f1" in (metrics or [])
        run = functools.partial(
            run_probe, task=name, folder=path, protocol=protocol, split=split, f1=f1
        )
    else:
        run = functools.partial(run_sts, task=name, source=path / files[0])
    if metrics or sides.get("text"):
        run = functools.partial(_with_declared, run=run, metrics=metrics, side=sides.get("text"))
    return Task(name, kind, run, tuple(str(path / f) for f in files))
