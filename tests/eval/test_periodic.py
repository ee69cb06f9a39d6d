"""The periodic-evaluation callback training is given: the scores `evaluate` gives, by
task; a bad task or data folder is the usual error, when it is built."""

from __future__ import annotations

import pytest

from cpt_embed import Encoder
from cpt_embed.errors import InputError
from cpt_embed.eval import evaluate
from cpt_embed.eval.periodic import periodic_evaluation


def test_the_callback_scores_the_encoder_as_evaluate_does(tiny_bert, mini_data):
    encoder = Encoder.load(tiny_bert, device="cpu").train()
    scores = periodic_evaluation("stsb,sickr", data_dir=mini_data)(encoder)
    report = evaluate(encoder, ["stsb", "sickr"], mini_data, cache_dir=None, show_progress=False)
    assert scores == {r.task: r.score for r in report.results}
    assert list(scores) == ["stsb", "sickr"]


def test_a_bad_task_or_data_folder_is_an_error_before_training(tmp_path, monkeypatch):
    """Built, not first called: `cpt train` builds it before the model loads, so a typo is
    not found eval_every steps into the run."""
    with pytest.raises(InputError, match="not found; pass --data DIR"):
        periodic_evaluation("stsb", data_dir=tmp_path / "nowhere")
    with pytest.raises(InputError, match="unknown task 'stsbb'"):
        periodic_evaluation("stsbb", data_dir=tmp_path)
    with pytest.raises(InputError, match=r"sts/stsb/test.tsv: missing, and task stsb reads it"):
        periodic_evaluation("stsb", data_dir=tmp_path)
    monkeypatch.setenv("RANK", "1")  # a process that never evaluates needs no data
    periodic_evaluation("stsb", data_dir=tmp_path / "nowhere")
