"""Evaluation during training, as the callback the training loop calls every `eval_every`
steps: training never imports evaluation, so its caller (`cpt train`, the experiments)
builds this and passes it in."""

from __future__ import annotations

import os
from collections.abc import Callable

from cpt_embed.eval.data import find_data_dir
from cpt_embed.eval.suite import check_task_data, evaluate, select_tasks
from cpt_embed.model import Encoder


def periodic_evaluation(
    tasks: str, data_dir: str | os.PathLike | None = None
) -> Callable[[Encoder], dict[str, float]]:
    """A callback that scores an Encoder on `tasks` (task and group names, as `cpt eval
    --tasks` takes them) and returns {task: score}. The data comes from `data_dir` (by
    default where `find_data_dir` finds it); the data dir is looked up at each call, on the
    process that evaluates. Nothing is cached (the weights change between calls) and no
    progress is shown (it would break the training's progress bar). The task names, and on
    the process that evaluates (rank 0) the data, are checked at once, before training."""
    chosen = select_tasks(tasks)
    if os.environ.get("RANK", "0") == "0":
        check_task_data(chosen, find_data_dir(data_dir))

    def scores(encoder: Encoder) -> dict[str, float]:
        report = evaluate(
            encoder,
            chosen,
            find_data_dir(data_dir),
            cache_dir=None,
            show_progress=False,
        )
        return {result.task: result.score for result in report.results}

    return scores
