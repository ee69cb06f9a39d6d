"""The backbone cast once for inference: on CPU with pre-packed linear weights and CPU
attention, the same embeddings as autocast, made again after training; ragged rows only
for models that give them their padded hidden states."""

from __future__ import annotations

import numpy as np
import torch

from cpt_embed import Encoder
from cpt_embed.model.runtime.attention import use_cpu_attention
from cpt_embed.model.runtime.copy import InferenceCopy, _takes_ragged_rows, mark_updated
from cpt_embed.model.runtime.packing import is_packed

TEXTS = ["a short text", "def f(x):\n    return x * 2", "", "word " * 80, "one more"]


def _autocast_reference(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """What encode computed before the inference copy: autocast over the training backbone."""
    batch = encoder.tokenize(texts)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return encoder(batch).float().numpy()


def test_bf16_copy_matches_autocast_and_follows_weight_changes(tiny_bert_no_dropout):
    encoder = Encoder.load(tiny_bert_no_dropout)
    vectors = encoder.encode(TEXTS, dtype="bf16")
    cosine = (vectors * _autocast_reference(encoder, TEXTS)).sum(1)
    assert cosine.min() > 0.999
    inference = encoder._runtime.copy
    copy = inference.backbone(encoder.backbone, torch.bfloat16)
    assert is_packed(copy) == torch.backends.mkldnn.is_available()
    assert copy.config._attn_implementation == "cpt_cpu"
    assert inference.ragged(copy)  # so the vectors above came from ragged rows
    # the copy is not part of the model: saving and training see the float32 weights only
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert not any(k.startswith("_runtime") for k in encoder.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        for param in encoder.backbone.parameters():
            param.add_(torch.randn_like(param), alpha=0.1)
    changed = encoder.encode(TEXTS, dtype="bf16")
    assert (changed * _autocast_reference(encoder, TEXTS)).sum(1).min() > 0.999
    assert np.abs(changed - vectors).max() > 0.05
    assert inference.backbone(encoder.backbone, torch.bfloat16) is not copy


def test_the_copy_follows_a_fused_adamw_step_marked_updated(tiny_bert_no_dropout):
    """torch's fused AdamW bumps no version counter: a copy made before its step would be
    used after it (periodic evaluation during training scored the weights of its first
    evaluation) unless the step is reported with mark_updated, as the Trainer does."""
    encoder = Encoder.load(tiny_bert_no_dropout)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=0.05, fused=True)  # loads it
    before = encoder.encode(TEXTS, dtype="bf16")
    encoder.train()
    encoder(encoder.tokenize(TEXTS)).sum().backward()
    optimiser.step()
    encoder.eval()
    assert np.array_equal(encoder.encode(TEXTS, dtype="bf16"), before)  # the stale copy
    mark_updated(encoder)
    after = encoder.encode(TEXTS, dtype="bf16")
    assert np.abs(after - before).max() > 0.01
    assert (after * _autocast_reference(encoder, TEXTS)).sum(1).min() > 0.999


def test_float32_uses_the_backbone_itself(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    assert InferenceCopy().backbone(encoder.backbone, torch.float32) is encoder.backbone


def test_only_models_that_give_ragged_rows_their_padded_states_get_them(tiny_bert):
    from transformers import AutoModel, RobertaConfig, RobertaModel

    bert = AutoModel.from_pretrained(tiny_bert).eval()
    assert use_cpu_attention(bert) and _takes_ragged_rows(bert)
    # RoBERTa numbers positions from padding_idx + 1: ids from 0 would shift every one
    config = RobertaConfig(
        vocab_size=99,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        attn_implementation="sdpa",
    )
    roberta = RobertaModel(config).eval()
    assert use_cpu_attention(roberta) and not _takes_ragged_rows(roberta)


def test_sliding_window_models_keep_their_windows_and_get_no_ragged_rows():
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=99,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
        local_attention=16,  # layer 0 attends within 8 tokens each side, layer 1 to all
        global_attn_every_n_layers=2,
        attn_implementation="sdpa",
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
        cls_token_id=None,
        sep_token_id=None,
    )
    model = ModernBertModel(config).eval()
    ids = torch.randint(1, 99, (3, 60))
    mask = torch.ones_like(ids)
    mask[1, 30:], mask[2, 5:] = 0, 0
    real = mask.bool()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        assert use_cpu_attention(model) and not _takes_ragged_rows(model)
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state[real]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
