"""The task registry and the loop that runs a model through the chosen tasks."""

from __future__ import annotations

import functools
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpt_embed.errors import InputError
from cpt_embed.eval.cache import CachedEncoder
from cpt_embed.eval.classification import PROBES, SENTEVAL_7, run_knn, run_probe, run_zero_shot
from cpt_embed.eval.context import Context, Task, TaskResult
from cpt_embed.eval.data import Checksums
from cpt_embed.eval.folders import layout_files
from cpt_embed.eval.retrieval import RETRIEVAL_SOURCES, run_retrieval
from cpt_embed.eval.sts import STS_SOURCES, run_sts
from cpt_embed.model.resolve import resolve_model

if TYPE_CHECKING:
    from cpt_embed.model import Encoder


def _sts_file(name: str) -> str:
    source = STS_SOURCES[name]
    return source if source.endswith(".tsv") else f"{source}/all.tsv"


def _files(folder: str, kind: str, protocol: str = "cv") -> tuple[str, ...]:
    return tuple(f"{folder}/{name}" for name in layout_files(kind, protocol=protocol))


def _registry() -> dict[str, Task]:
    tasks = [
        Task(n, "sts", functools.partial(run_sts, task=n, source=STS_SOURCES[n]), (_sts_file(n),))
        for n in STS_SOURCES
    ]
    tasks += [
        Task(
            n,
            "classification",
            functools.partial(
                run_probe, task=n, folder=f"classification/{n}", protocol=way, f1=n == "mrpc"
            ),
            _files(f"classification/{n}", "classification", way),
        )
        for n, way in PROBES.items()
    ]
    tasks += [
        Task(
            "zeroshot_sst2",
            "zeroshot",
            functools.partial(run_zero_shot, task="sst2"),
            ("classification/sst2/labels.json", "classification/sst2/test.jsonl"),
        ),
        Task(
            "knn_sst2",
            "knn",
            functools.partial(run_knn, task="sst2"),
            _files("classification/sst2", "classification"),
        ),
    ]
    tasks += [
        Task(
            n,
            group,
            functools.partial(run_retrieval, task=n, folder=folder, group=group),
            _files(folder, group),
        )
        for n, (folder, group) in RETRIEVAL_SOURCES.items()
    ]
    return {t.name: t for t in tasks}


TASKS = _registry()
GROUPS: dict[str, list[str]] = {
    "all": list(TASKS),
    "senteval": list(SENTEVAL_7),
    **{
        g: [t.name for t in TASKS.values() if t.group == g]
        for g in dict.fromkeys(t.group for t in TASKS.values())
    },
}


def select_tasks(spec: list[str] | str) -> list[str | Task]:
    """Tasks from names, group names (in registry order) and paths (comma- or space-
    separated): a path is a folder of the user's in a layout of the evaluation data (or an
    STS .tsv file), a Task named after it, after the built-in ones."""
    words = [
        w
        for part in ([spec] if isinstance(spec, str) else spec)
        for w in part.replace(",", " ").split()
    ]
    chosen: set[str] = set()
    folders: list[Task] = []
    for word in words or ["all"]:
        key = word.lower()
        if key in GROUPS:
            chosen.update(GROUPS[key])
        elif key in TASKS:
            chosen.add(key)
        elif "/" in word or Path(word).exists():
            folders.append(Task.from_folder(word))
        else:
            raise InputError(
                f"unknown task {word!r}; groups: {', '.join(GROUPS)}; tasks: {', '.join(TASKS)}; "
                "or a path to a folder of your own (BEIR, classification or STS layout)"
            )
    tasks: list[str | Task] = [name for name in TASKS if name in chosen]
    names = [task_name(t) for t in tasks]
    for task in folders:
        if task.name in names:
            raise InputError(
                f"two tasks named {task.name!r} (the name of the folder {task.files[0]}); "
                "rename the folder"
            )
        names.append(task.name)
        tasks.append(task)
    return tasks


def task_name(task: str | Task) -> str:
    """The name a task is reported under."""
    return task if isinstance(task, str) else task.name


def task_group(task: str | Task) -> str:
    """The group a task is reported under (retrieval, code, sts, ...)."""
    return _task(task).group


def _task(task: str | Task) -> Task:
    return TASKS[task] if isinstance(task, str) else task


def check_task_data(tasks: list[str | Task], data_dir: Path) -> None:
    """Refuse, before any model loads, a chosen task whose files the data dir lacks."""
    for task in map(_task, tasks):
        for relative in task.files:
            path = data_dir / relative
            if not path.is_file():
                raise InputError(
                    f"{path}: missing, and task {task.name} reads it; complete the data dir "
                    f"(../shared/data/README.md) or leave {task.name} out of --tasks"
                )


LEXICAL = "bm25"
LEXICAL_GROUPS = ("retrieval", "code")
RETRIEVERS = ("dense", LEXICAL, "hybrid")


def is_lexical(model: object) -> bool:
    """Whether `model` names the BM25 baseline rather than an embedding model."""
    return isinstance(model, str) and model.lower() == LEXICAL


def check_models(models: list[str]) -> None:
    """Refuse, before the first evaluation, a model name that resolves to no model."""
    for name in models:
        if not is_lexical(name):
            resolve_model(name)


@dataclass
class ModelReport:
    """Everything one model's evaluation produced."""

    model: str
    settings: dict[str, Any]
    results: list[TaskResult] = field(default_factory=list)
    data_files: dict[str, str] = field(default_factory=dict)
    data_checksum: str = ""
    seconds: float = 0.0

    def merge(self, later: ModelReport) -> ModelReport:
        """This report with a later one's results added, for an evaluation done in parts."""
        checksums = Checksums()
        checksums.files = {**self.data_files, **later.data_files}
        tasks = [*self.settings.get("tasks", []), *later.settings.get("tasks", [])]
        return ModelReport(
            model=self.model,
            settings={**later.settings, "tasks": tasks},
            results=[*self.results, *later.results],
            data_files=checksums.files,
            data_checksum=checksums.combined(),
            seconds=self.seconds + later.seconds,
        )


def versions() -> dict[str, str]:
    """Versions of what produced the numbers."""
    import numpy
    import sklearn
    import torch
    import transformers

    import cpt_embed

    return {
        "cpt_embed": cpt_embed.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def _dense(
    model: str | Encoder,
    cache_dir: Path | None,
    *,
    batch_size: int,
    dtype: str,
    compile: bool,
    device: str | None,
    show_progress: bool,
) -> tuple[str, CachedEncoder, dict[str, Any]]:
    """The model's name, its embedder through the cache, and its settings for the report."""
    from cpt_embed.model import Encoder
    from cpt_embed.model.runtime.devices import dtype_name, to_dtype

    name = model if isinstance(model, str) else (model.config.base_model or "encoder")
    encoder = Encoder.load(model, device=device) if isinstance(model, str) else model
    dtype = dtype_name(to_dtype(dtype, encoder.device))
    embedder = CachedEncoder(
        encoder,
        cache_dir,
        batch_size=batch_size,
        dtype=dtype,
        compile=compile,
        show_progress=show_progress,
    )
    settings = {
        "model_fingerprint": embedder.fingerprint,
        "encoder": encoder.config.to_dict(),
        "dtype": dtype,
        "compile": compile,
        "batch_size": batch_size,
        "device": str(encoder.device),
    }
    return name, embedder, settings


def evaluate(
    model: str | Encoder,
    tasks: list[str | Task],
    data_dir: Path,
    *,
    cache_dir: Path | None,
    batch_size: int = 128,
    dtype: str = "auto",
    compile: bool = False,
    symmetric_side: str = "query",
    seed: int = 0,
    device: str | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
    show_progress: bool = True,
    retriever: str = "dense",
) -> ModelReport:
    """Run `model` through `tasks` (names, or Tasks such as `Task.from_folder(path)`);
    `on_result` sees each task's result as it lands. `retriever` ranks the documents of
    retrieval and code tasks: "dense" (the model), "bm25", or "hybrid" (both, fused). The
    model "bm25" is the lexical baseline alone: it runs the retrieval and code tasks and
    skips the others."""
    if symmetric_side not in ("query", "document"):
        raise InputError(f"symmetric side must be query or document, got {symmetric_side!r}")
    if retriever not in RETRIEVERS:
        raise InputError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {retriever!r}")
    check_task_data(tasks, data_dir)
    started = time.perf_counter()
    chosen = [_task(t) for t in tasks]
    if is_lexical(model):
        name, embedder = LEXICAL, None
        model_settings = {}
        skipped = [t.name for t in chosen if t.group not in LEXICAL_GROUPS]
        chosen = [t for t in chosen if t.group in LEXICAL_GROUPS]
    else:
        name, embedder, model_settings = _dense(
            model,
            cache_dir,
            batch_size=batch_size,
            dtype=dtype,
            compile=compile,
            device=device,
            show_progress=show_progress,
        )
        skipped = []
    ctx = Context(
        embedder,
        data_dir,
        symmetric_side=symmetric_side,
        seed=seed,
        retriever=LEXICAL if embedder is None else retriever,
    )
    if ctx.retriever != "dense":
        from cpt_embed.model.lexical import BM25

        model_settings["bm25"] = BM25.settings(code=any(t.group == "code" for t in chosen))
    if ctx.retriever == "hybrid":
        from cpt_embed.model import fusion

        model_settings["fusion"] = {
            "method": fusion.FUSION,
            "dense_weight": fusion.DENSE_WEIGHT,
            "depth": fusion.DEPTH,
        }
    settings = {
        "model": name,
        **model_settings,
        "symmetric_side": symmetric_side,
        "retriever": ctx.retriever,
        "seed": seed,
        "data_dir": str(data_dir),
        "tasks": [t.name for t in chosen],
        **({"skipped": skipped} if skipped else {}),
        "versions": versions(),
    }
    report = ModelReport(name, settings)
    for task in chosen:
        start = time.perf_counter()
        result = task.run(ctx)
        result.seconds = time.perf_counter() - start
        report.results.append(result)
        if on_result:
            on_result(result)
    report.data_files = dict(ctx.checksums.files)
    report.data_checksum = ctx.checksums.combined()
    report.seconds = time.perf_counter() - started
    if embedder is not None:
        settings["cache"] = {
            "dir": str(cache_dir) if cache_dir else None,
            "hits": embedder.hits,
            "misses": embedder.misses,
        }
    return report
