"""BERT-style encoders for inference on CPU, built from the safetensors weights without
transformers' model code.

Importing transformers' model classes costs a fresh process about 1.5 s of CPU time
(its weight-loading and kernel integrations import torch._dynamo and
torch.distributed.tensor), three quarters of `Encoder.load`. For the architecture most
small embedding models share (BERT: learned absolute positions, layer norm after each
block, exact GELU, bidirectional self-attention only), `encode`'s bfloat16 CPU copy is
made here straight from the file: the products of copy.py on pre-packed weights (query,
key and value in one), the same attention and ragged rows (attention.py), the feed-forward
GELU fused. Encoder.load then leaves transformers' model unloaded until something needs
it (training, explaining, float32, saving); tests hold both copies equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.errors import unreadable
from cpt_embed.model.runtime.attention import RAGGED, Ragged, attend
from cpt_embed.model.runtime.packing import PackedLinear, probe_packed

_BLOCK = "encoder.layer.{}."
_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def supported(config: dict) -> bool:
    """True for a config.json this module computes exactly as transformers' BertModel."""
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return (
        config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act") == "gelu"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
        and isinstance(hidden, int)
        and isinstance(heads, int)
        and heads > 0
        and hidden % heads == 0
        and isinstance(config.get("num_hidden_layers"), int)
    )


class UnpackedError(RuntimeError):
    """oneDNN cannot run, or gets wrong, one of the model's packed products here."""


def _linear(
    weights: dict[str, torch.Tensor], probed: set[tuple], *names: str, gelu: bool = False
) -> PackedLinear:
    """The layers `names` (their outputs side by side) as one packed linear layer; the first
    of each shape is probed against F.linear on random inputs (`probed` holds the shapes
    done: a kernel that fails does so for its shape and dtype, whatever the weights)."""
    weight = torch.cat([weights[f"{n}.weight"] for n in names])
    bias = torch.cat([weights[f"{n}.bias"] for n in names])
    layer = PackedLinear(weight, bias)
    layer.gelu = gelu
    shape = (*weight.shape, gelu)
    if shape not in probed:
        if not probe_packed(layer, weight, bias, torch.Generator().manual_seed(0)):
            raise UnpackedError(f"packed {'+'.join(names)} disagrees with F.linear")
        probed.add(shape)
    return layer


class _Block(nn.Module):
    """One Transformer block: self-attention, then the feed-forward, each with a residual
    and layer norm after it (BertLayer)."""

    def __init__(
        self, weights: dict[str, torch.Tensor], heads: int, eps: float, probed: set[tuple]
    ) -> None:
        super().__init__()
        self.heads, self.eps = heads, eps
        names = [f"attention.self.{n}" for n in ("query", "key", "value")]
        self.qkv = _linear(weights, probed, *names)
        self.attention_out = _linear(weights, probed, "attention.output.dense")
        self.intermediate = _linear(weights, probed, "intermediate.dense", gelu=True)
        self.out = _linear(weights, probed, "output.dense")
        self.norms = [
            (weights[f"{n}.LayerNorm.weight"], weights[f"{n}.LayerNorm.bias"])
            for n in ("attention.output", "output")
        ]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, ragged: Ragged | None):
        batch, tokens, width = x.shape
        dim = width // self.heads
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        context = attend(q, k, v, mask, dim**-0.5, ragged)
        attended = self.attention_out(context.reshape(batch, tokens, width).contiguous())
        x = F.layer_norm(attended + x, (width,), *self.norms[0], self.eps)
        return F.layer_norm(self.out(self.intermediate(x)) + x, (width,), *self.norms[1], self.eps)


class CpuBert(nn.Module):
    """A BERT encoder's last hidden states, for inference on CPU in one dtype; called as
    transformers' BertModel is (input_ids, attention_mask or a Ragged row, token_type_ids,
    position_ids), returning an object with `.last_hidden_state`."""

    def __init__(self, weights: dict[str, torch.Tensor], config: dict) -> None:
        super().__init__()
        self.hidden_size = int(config["hidden_size"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.embeddings = [weights[f"embeddings.{n}.weight"] for n in _EMBEDDINGS]
        self.vocab_size, self.dtype = self.embeddings[0].shape[0], self.embeddings[0].dtype
        self.embedding_norm = (
            weights["embeddings.LayerNorm.weight"],
            weights["embeddings.LayerNorm.bias"],
        )
        heads, probed = int(config["num_attention_heads"]), set()
        self.blocks = nn.ModuleList(
            _Block(_block_weights(weights, i), heads, self.eps, probed)
            for i in range(int(config["num_hidden_layers"]))
        )

    @classmethod
    def load(cls, folder: Path, dtype: torch.dtype) -> CpuBert | None:
        """The model of `folder` (config.json and one .safetensors file) in `dtype`; None
        where it is not a BERT this module computes, or its weights are laid out otherwise
        (Encoder.load then loads it through transformers)."""
        from safetensors import safe_open

        files = sorted(Path(folder).glob("*.safetensors"))
        try:
            config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if len(files) != 1 or not isinstance(config, dict) or not supported(config):
            return None
        weights = {}
        with unreadable(folder, "its weights"), safe_open(files[0], framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                key = name.removeprefix("bert.")
                if key.startswith(("embeddings.", "encoder.layer.")):
                    weights[key] = handle.get_tensor(name).to(dtype)
        try:
            return cls(weights, config)
        except (KeyError, RuntimeError):  # other names, or oneDNN without this dtype
            return None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Ragged,
    ) -> SimpleNamespace:
        """Hidden states (batch, tokens, hidden) of the last block as `.last_hidden_state`."""
        ragged = kwargs.pop(RAGGED, None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        tokens = input_ids.shape[1]
        if position_ids is None:
            position_ids = torch.arange(tokens)[None]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        word, position, token_type = self.embeddings
        x = F.embedding(input_ids, word) + F.embedding(token_type_ids, token_type)
        x = x + F.embedding(position_ids, position)
        x = F.layer_norm(x, (self.hidden_size,), *self.embedding_norm, self.eps)
        mask = None
        if ragged is None and attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask, ragged)
        return SimpleNamespace(last_hidden_state=x)


def _block_weights(weights: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    prefix = _BLOCK.format(index)
    return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
