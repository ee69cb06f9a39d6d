"""The torch.compile'd backbone for `encode(compile=True)`, with frozen weights, and its
fallback to eager mode where compiling fails."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from cpt_embed.model.runtime.copy import weights_key

T = TypeVar("T")


class InferenceCompiler:
    """Holds the compiled backbone; compiles again for another backbone or when the weights
    change (training between two encodes) and falls back to eager mode, with one warning,
    where compiling fails (no C++ compiler, an unsupported model)."""

    def __init__(self) -> None:
        self._module: nn.Module | None = None
        self._source: nn.Module | None = None
        self._key: tuple | None = None
        self.failed = False

    def module(self, backbone: nn.Module) -> nn.Module | None:
        """The compiled backbone, or None where compiling has failed before."""
        if self.failed:
            return None
        key = weights_key(backbone)
        if self._module is None or backbone is not self._source or key != self._key:
            if self._module is not None:
                # Frozen weights are baked into the cached graphs: drop them all.
                torch._dynamo.reset()
            self._module = torch.compile(backbone, dynamic=True)
            self._source, self._key = backbone, key
        return self._module

    def run(self, compiled: Callable[[], T], eager: Callable[[], T]) -> T:
        """`compiled()`, or `eager()` from now on if compiling fails."""
        if not self.failed:
            import torch._inductor.config as inductor

            try:
                with inductor.patch(freezing=True):
                    return compiled()
            except Exception as err:  # compilers fail in many ways; eager mode still works
                self.failed = True
                self._module = None
                # the warning names the line of Encoder.encode, three calls up
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                    "embedding in eager mode",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return eager()
