"""Training state in safetensors: optimiser, schedule and RNG come back exactly, and a
file that is not such a state is a clear error, never unpickled."""

from __future__ import annotations

import pickle

import pytest
import torch

from cpt_embed.errors import InputError
from cpt_embed.train.state import load_state, save_state


def test_optimiser_schedule_and_rng_state_round_trip_exactly(tmp_path):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        schedule.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda": [],
        "step": 3,
        "config": {"lr": 1e-3, "data": ["a.jsonl"], "note": None, "tau": float("inf")},
    }
    save_state(state, tmp_path / "state.safetensors")
    back = load_state(tmp_path / "state.safetensors")

    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)  # a tuple again
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys stay ints
    for key, saved in state["optimizer"]["state"].items():
        for name, value in saved.items():
            assert torch.equal(back["optimizer"]["state"][key][name], value)
    assert back["schedule"] == state["schedule"]
    assert torch.equal(back["rng"], state["rng"])
    assert back["config"] == state["config"] and back["step"] == 3

    restored = torch.optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(back["optimizer"])
    assert restored.state_dict()["param_groups"] == state["optimizer"]["param_groups"]


def test_a_pickle_or_damaged_file_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    pickled = tmp_path / "state.safetensors"
    pickled.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(InputError, match="not a cpt-embed training state"):
        load_state(pickled)
    save_state({"step": torch.tensor([1])}, tmp_path / "whole.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:-3])
    with pytest.raises(InputError, match="cut.safetensors"):
        load_state(cut)
    with pytest.raises(TypeError, match="cannot store object"):
        save_state({"thing": object()}, tmp_path / "x.safetensors")
