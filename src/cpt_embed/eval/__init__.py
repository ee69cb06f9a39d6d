"""Evaluation: STS, linear probe, zero-shot, k-NN, retrieval and code search on real data."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["GROUPS", "TASKS", "ModelReport", "Task", "evaluate", "select_tasks"]

if TYPE_CHECKING:
    from cpt_embed.eval.context import Task
    from cpt_embed.eval.suite import GROUPS, TASKS, ModelReport, evaluate, select_tasks


def __getattr__(name: str):
    # The suite pulls in torch; the data loaders (used by `cpt pairs`) do not need it.
    if name == "Task":
        from cpt_embed.eval.context import Task

        return Task
    if name in __all__:
        from cpt_embed.eval import suite

        return getattr(suite, name)
    raise AttributeError(f"module 'cpt_embed.eval' has no attribute {name!r}")
