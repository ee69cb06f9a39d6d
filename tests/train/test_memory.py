"""Chunk memory: the activation bytes per token a probe chunk keeps for its backward pass
(activations counted, parameters not; attention probabilities kept under dropout grow with
length; packed and padded alike), and the chunk plan: configured tokens, texts on CPU, and
on a GPU a token budget from its free memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cpt_embed import Encoder
from cpt_embed.model.runtime.packed import enable_packed_training
from cpt_embed.train.chunks import PASS_COST_TOKENS, ChunkPlan
from cpt_embed.train.memory import (
    MAX_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    activation_bytes_per_token,
    chunk_plan,
    chunk_tokens_bound,
)


@pytest.fixture(scope="module")
def encoder(tiny_bert) -> Encoder:
    """tiny BERT (dropout 0.1) on packed rows, in training mode as the Trainer probes it."""
    encoder = Encoder.load(tiny_bert, device="cpu", max_length=64)
    assert enable_packed_training(encoder.backbone)
    return encoder.train()


def _per_token(encoder: Encoder, length: int, packed: bool, monkeypatch) -> float:
    monkeypatch.setattr(encoder.config, "max_length", length)
    return activation_bytes_per_token(encoder, encoder.tokens, packed)


@pytest.mark.parametrize("packed", [False, True])
def test_counts_activations_but_not_parameters(encoder, packed, monkeypatch):
    config = encoder.backbone.config
    per_token = _per_token(encoder, 16, packed, monkeypatch)
    # every layer keeps at least the inputs of its linear layers: the hidden states (q, k,
    # v and the attention output's projection) and the intermediate activations, float32
    least = config.num_hidden_layers * (2 * config.hidden_size + config.intermediate_size) * 4
    assert per_token >= least
    # the weights (4 MB, mostly the word embeddings) would be far more over 4 x 16 tokens
    weights = sum(p.numel() * p.element_size() for p in encoder.parameters())
    assert per_token * 4 * 16 < weights / 4
    assert all(p.grad is None for p in encoder.parameters())


def test_the_same_for_packed_and_padded_chunks(encoder, monkeypatch):
    for length in (16, 64):
        packed = _per_token(encoder, length, True, monkeypatch)
        padded = _per_token(encoder, length, False, monkeypatch)
        assert 0.5 < packed / padded < 2, length


@pytest.mark.parametrize("packed", [False, True])
def test_kept_attention_probabilities_grow_per_token_with_length(encoder, packed, monkeypatch):
    """With dropout on CPU the attention probabilities (heads x length per token) are kept
    for the backward pass, so a token of a longer chunk keeps more."""
    heads = encoder.backbone.config.num_attention_heads
    layers = encoder.backbone.config.num_hidden_layers
    short = _per_token(encoder, 16, packed, monkeypatch)
    long = _per_token(encoder, 64, packed, monkeypatch)
    # at least one float32 (tokens x tokens) matrix per head and layer more
    assert long - short >= layers * heads * (64 - 16) * 4


def test_measured_again_it_is_the_same(encoder, monkeypatch):
    assert _per_token(encoder, 32, True, monkeypatch) == _per_token(encoder, 32, True, monkeypatch)


# ---------------------------------------------------------------- chunk_plan


class _FakeEncoder(nn.Module):
    """What chunk_plan reads of an Encoder: device, parameters and max_length."""

    def __init__(self, device: str, max_length: int, params: int = 1000) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(params), requires_grad=True)
        self._device = torch.device(device)
        self.config = SimpleNamespace(max_length=max_length)

    @property
    def device(self) -> torch.device:
        return self._device


def _free_memory(monkeypatch, free: int) -> list:
    asked = []

    def mem_get_info(device=None):
        asked.append(device)
        return free, 2 * free

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return asked


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("packed", [False, True])
def test_configured_chunk_tokens_are_taken_as_given(monkeypatch, device, packed):
    asked = _free_memory(monkeypatch, 10**9)
    plan = chunk_plan(_FakeEncoder(device, 64), packed, 8, 3000, 1e4)
    cost = PASS_COST_TOKENS["cpu" if device == "cpu" else "other"]
    assert plan == ChunkPlan(None, 3000, packed, cost)
    assert asked == []


@pytest.mark.parametrize("packed", [False, True])
def test_on_cpu_a_chunk_is_chunk_size_texts(encoder, packed):
    plan = chunk_plan(encoder, packed, 8, None, 1e4)
    assert plan == ChunkPlan(8, None, packed, PASS_COST_TOKENS["cpu"])
    assert chunk_tokens_bound(plan, 64) == 8 * 64


def test_on_a_gpu_the_budget_follows_free_memory(monkeypatch):
    fake = _FakeEncoder("cuda", 64, params=10**7)  # 40 MB of weights
    asked = _free_memory(monkeypatch, 10**9)
    plan = chunk_plan(fake, True, 8, None, 1e4)
    assert asked == [torch.device("cuda")]
    assert plan.max_rows is None and plan.packed and plan.pass_cost == PASS_COST_TOKENS["other"]
    # the weights are on the GPU already: what is free must still hold their gradients and
    # AdamW's two moments; a chunk gets 0.4 of the rest, in whole sequences of 64 tokens
    budget = 0.4 * (10**9 - 3 * 4 * 10**7) / 1e4
    assert plan.max_tokens == budget // 64 * 64 == 35200
    assert chunk_tokens_bound(plan, 64) == plan.max_tokens


@pytest.mark.parametrize("max_length", [64, 100, 512])
def test_gpu_budgets_are_whole_sequences_within_bounds_and_grow(monkeypatch, max_length):
    fake = _FakeEncoder("cuda", max_length)
    tokens = []
    for free in [0, 10**6, 10**8, 10**9, 4 * 10**9, 10**10, 10**12]:
        _free_memory(monkeypatch, free)
        plan = chunk_plan(fake, False, 8, None, 2e4)
        assert plan.max_tokens % max_length == 0
        assert max_length <= plan.max_tokens <= MAX_CHUNK_TOKENS
        assert plan.max_tokens >= MIN_CHUNK_TOKENS - max_length
        tokens.append(plan.max_tokens)
    assert tokens == sorted(tokens) and tokens[0] < tokens[-1]
    assert tokens[-1] > MAX_CHUNK_TOKENS - max_length  # the cap, to whole sequences


def test_a_gpu_budget_holds_one_sequence_at_least(monkeypatch):
    _free_memory(monkeypatch, 0)
    plan = chunk_plan(_FakeEncoder("cuda", 4096), True, 8, None, 1e6)
    assert plan.max_tokens == 4096


@pytest.fixture(scope="module")
def gpt2_eos_last(tmp_path_factory):
    """A tiny GPT-2 laid out as GPT-2 is: its end token, which pads, is the last row of the
    vocabulary (id 50256 of 50257 there)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(["the quick brown fox", "def add(a, b): return a + b"] * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    end = tokenizer.eos_token_id
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
        bos_token_id=end, eos_token_id=end,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("gpt2-eos-last")
    GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_model_padding_with_its_last_token_can_be_measured(gpt2_eos_last):
    encoder = Encoder.load(gpt2_eos_last, device="cpu", max_length=16).train()
    rows = encoder.backbone.get_input_embeddings().num_embeddings
    assert encoder.tokens.pad_id == rows - 1
    assert activation_bytes_per_token(encoder, encoder.tokens, False) > 0
