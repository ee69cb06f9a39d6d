"""Compute dtypes by name and by what the hardware runs natively."""

from __future__ import annotations

import pytest
import torch

from cpt_embed.errors import InputError
from cpt_embed.model.runtime.devices import dtype_name, native_bf16, to_device, to_dtype


def test_auto_precision_is_bf16_exactly_where_the_hardware_has_it():
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native_bf16(cpu) else torch.float32
    assert to_dtype("auto", cpu) == expected
    assert to_dtype("auto", torch.device("meta")) == torch.float32
    assert to_dtype("bf16") == torch.bfloat16 and to_dtype(None) == torch.float32


def test_dtype_names_round_trip_and_unknown_names_fail_clearly():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert to_dtype(dtype_name(dtype)) == dtype
    assert to_dtype(torch.float16) == torch.float16
    with pytest.raises(InputError, match="'int3' is not one of"):
        to_dtype("int3")


def test_to_device_moves_every_tensor_of_a_batch():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "mask": torch.zeros(2, 3)}
    moved = to_device(batch, torch.device("meta"))
    assert set(moved) == set(batch) and all(v.device.type == "meta" for v in moved.values())
