"""Evaluation: STS, linear probe, zero-shot, k-NN, retrieval and code search on real data."""

from cpt_embed.eval.suite import GROUPS, TASKS, ModelReport, evaluate, select_tasks

__all__ = ["GROUPS", "TASKS", "ModelReport", "evaluate", "select_tasks"]
