"""An Encoder whose transformers backbone is loaded on first use.

`Encoder.load` on CPU makes `encode`'s bfloat16 copy of a BERT-style model straight from
its weights file (runtime/bert.py) and leaves transformers' model, whose import is most of
the load time, for whatever needs it: training, explaining, float32, saving, state_dict.
The Encoder's `_modules` is then a `LazyModules`: every way torch reaches a submodule
(attribute, iteration, state_dict, `to`, `train`, copies) loads the backbone first, so
nothing sees an Encoder without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BACKBONE = "backbone"


@dataclass
class Deferred:
    """A backbone to load on first use (`load`), and the inference copy made without it."""

    load: Callable[[], nn.Module]
    fast: nn.Module


class LazyModules(dict):
    """An nn.Module's `_modules` whose "backbone" entry is `deferred.load()`, called once on
    the first access; `fast` is the deferred copy until then, None after."""

    def __init__(self, deferred: Deferred) -> None:
        super().__init__()
        self._deferred: Deferred | None = deferred
        self._lock = threading.Lock()

    @property
    def fast(self) -> nn.Module | None:
        """The inference copy while the backbone is not loaded."""
        deferred = self._deferred
        return None if deferred is None else deferred.fast

    def _ready(self) -> None:
        if self._deferred is None:
            return
        with self._lock:
            if self._deferred is not None:
                # first use may come inside inference mode (a server's encode): weights made
                # there could never take part in autograd (training, explaining) after
                with torch.inference_mode(False):
                    super().__setitem__(BACKBONE, self._deferred.load())
                self._deferred = None

    def __contains__(self, name: object) -> bool:
        return (name == BACKBONE and self._deferred is not None) or super().__contains__(name)

    def __getitem__(self, name: str) -> nn.Module | None:
        if name == BACKBONE:
            self._ready()
        return super().__getitem__(name)

    def __setitem__(self, name: str, module: nn.Module | None) -> None:
        if name == BACKBONE:
            self._deferred = None  # replaced before it was ever loaded
        super().__setitem__(name, module)

    def __delitem__(self, name: str) -> None:
        self._ready()
        super().__delitem__(name)

    def __iter__(self) -> Iterator[str]:
        self._ready()
        return super().__iter__()

    def __len__(self) -> int:
        self._ready()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        """dict.get, loading the backbone first."""
        self._ready()
        return super().get(name, default)

    def keys(self):  # noqa: D102 (dict's)
        self._ready()
        return super().keys()

    def values(self):  # noqa: D102
        self._ready()
        return super().values()

    def items(self):  # noqa: D102
        self._ready()
        return super().items()

    def pop(self, name: str, *default: Any) -> Any:
        """dict.pop, loading the backbone first."""
        self._ready()
        return super().pop(name, *default)

    def copy(self) -> dict:
        """A plain dict of the modules, the backbone loaded."""
        self._ready()
        return dict(super().items())

    def __reduce_ex__(self, protocol: int):
        # copies and pickles get the loaded modules in a plain dict; the fast copy's packed
        # weights are opaque to both
        return dict, (self.copy(),)
