"""The training loop: resume equals an uninterrupted run, Ctrl-C saves, two processes equal
one, transformers' schedules, evaluation as a callback, clear errors for bad settings and
data."""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from cpt_embed import Encoder
from cpt_embed.cli import app
from cpt_embed.errors import CptError, InputError
from cpt_embed.train import chunks as chunks_module
from cpt_embed.train.batch import from_records
from cpt_embed.train.chunks import side_chunks
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import Trainer, train
from cpt_embed.train.state import load_state, save_state
from cpt_embed.train.tokens import key_of


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    topics = ["rivers", "mountains", "cities", "music", "code", "stars", "ships", "birds"]
    with open(path, "w") as handle:
        for i in range(200):
            topic = topics[i % len(topics)]
            handle.write(
                json.dumps(
                    {
                        "x": f"a question {i} about {topic}",
                        "y": f"an answer {i} that explains {topic} well",
                    }
                )
                + "\n"
            )
    return path


def _config(model, data, output, **kw) -> TrainConfig:
    base = dict(
        model=str(model),
        data=[str(data)],
        output=str(output),
        batch_size=16,
        chunk_size=8,
        max_steps=6,
        lr=1e-3,
        warmup=0.2,
        save_every=3,
        log_every=1,
        shuffle_buffer=50,
        max_length=32,
    )
    return TrainConfig(**{**base, **kw})


def _rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def _losses(output: Path) -> list[float]:
    return [r["loss"] for r in _rows(output) if "loss" in r]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in Encoder.load(folder).backbone.state_dict().items()}


def test_training_lowers_the_loss_and_saves_an_encoder(tiny_bert, pairs_file, tmp_path):
    final = train(
        _config(tiny_bert, pairs_file, tmp_path / "run", max_steps=12, save_every=5),
        show_progress=False,
    )
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    # the lr after each step: 2 warm-up steps (from lr 0), then linear decay to 0 at step 12
    lrs = [r["lr"] for r in _rows(tmp_path / "run")]
    assert lrs == pytest.approx([1e-3 * f for f in [0.5, *(1 - k / 10 for k in range(11))]])
    encoder = Encoder.load(final)
    assert encoder.config.training["steps"] == 12
    assert encoder.config.logit_scale == pytest.approx(20.0, rel=0.1)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000010", "step-0000012"]  # keep_last=2


@pytest.mark.cuda
def test_training_on_cuda_follows_the_cpu_run(tiny_llama, pairs_file, tmp_path):
    """Same pairs and seed on both devices (no dropout in the tiny Llama): the fp32 losses
    agree step by step; bf16 autocast, the GPU default, stays close and learns."""
    runs = {}
    for name, device, dtype in [("cpu", "cpu", "float32"), ("cuda", "cuda", "float32")]:
        train(
            _config(tiny_llama, pairs_file, tmp_path / name, device=device, dtype=dtype),
            show_progress=False,
        )
        runs[name] = _losses(tmp_path / name)
    assert runs["cuda"] == pytest.approx(runs["cpu"], rel=1e-3)
    train(
        _config(
            tiny_llama, pairs_file, tmp_path / "bf16", device="cuda", dtype="bfloat16", max_steps=12
        ),
        show_progress=False,
    )
    losses = _losses(tmp_path / "bf16")
    assert losses[0] == pytest.approx(runs["cpu"][0], rel=2e-2)
    assert sum(losses[-3:]) < sum(losses[:3])


def test_interrupt_saves_and_resume_equals_an_uninterrupted_run(
    tiny_bert, pairs_file, tmp_path, monkeypatch
):
    whole = train(_config(tiny_bert, pairs_file, tmp_path / "whole"), show_progress=False)
    real = Trainer.run_step

    def ctrl_c_during_step_four(self, batch):
        row = real(self, batch)
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the step still completes
        return row

    monkeypatch.setattr(Trainer, "run_step", ctrl_c_during_step_four)
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train(_config(tiny_bert, pairs_file, tmp_path / "cut"), show_progress=False)
    monkeypatch.setattr(Trainer, "run_step", real)
    assert (tmp_path / "cut" / "checkpoints" / "step-0000004" / "state.safetensors").is_file()
    with pytest.raises(InputError, match="pass --resume"):
        train(_config(tiny_bert, pairs_file, tmp_path / "cut"), show_progress=False)
    with pytest.raises(InputError, match="different batch_size"):
        train(
            _config(tiny_bert, pairs_file, tmp_path / "cut", batch_size=8, resume=True),
            show_progress=False,
        )
    resumed = train(
        _config(tiny_bert, pairs_file, tmp_path / "cut", resume=True), show_progress=False
    )
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "whole"), abs=1e-6)
    lrs = [[r["lr"] for r in _rows(tmp_path / run)] for run in ("cut", "whole")]
    assert lrs[0] == lrs[1]  # the schedule picked up where it stopped
    for name, tensor in _weights(whole).items():
        torch.testing.assert_close(_weights(resumed)[name], tensor)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _records(path: Path | str, n: int) -> list[dict]:
    """The first n pairs of a pairs file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(n), strict=False)]


def _worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(**config))
    row = trainer.train_step(_records(config["data"][0], trainer.config.batch_size))
    if rank == 0:
        torch.save(
            {
                "loss": row["loss"],
                "weights": trainer.encoder.backbone.state_dict(),
                "tau": trainer.loss_fn.tau.detach(),
            },
            out,
        )
    torch.distributed.destroy_process_group()


def test_two_processes_equal_one_on_the_same_global_batch(
    tiny_bert_no_dropout, pairs_file, tmp_path
):
    config = _config(tiny_bert_no_dropout, pairs_file, tmp_path / "d", chunk_size=4).to_dict()
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path / "two.pt")), nprocs=2)
    two = torch.load(tmp_path / "two.pt", weights_only=True)

    single = Trainer(TrainConfig(**{**config, "output": str(tmp_path / "s")}))
    row = single.train_step(_records(pairs_file, 16))
    assert two["loss"] == pytest.approx(row["loss"], abs=1e-5)
    torch.testing.assert_close(two["tau"], single.loss_fn.tau.detach())
    for name, tensor in single.encoder.backbone.state_dict().items():
        torch.testing.assert_close(two["weights"][name], tensor, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [3, 64])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("packing", [True, False])
@pytest.mark.parametrize("grad_cache", [True, False])
def test_a_step_in_chunks_by_length_equals_the_whole_batch(
    tiny_bert_no_dropout,
    pairs_file,
    tmp_path,
    chunk_size,
    padding_side,
    packing,
    grad_cache,
    monkeypatch,
):
    """train_step sorts each side by length into chunks (cached or in one graph; packed
    rows or padded) and gives the loss and gradients of the whole batch padded at once,
    word embeddings included."""
    monkeypatch.setitem(chunks_module.PASS_COST_TOKENS, "cpu", 0)  # cut wherever it saves
    config = _config(
        tiny_bert_no_dropout,
        pairs_file,
        tmp_path,
        batch_size=8,
        chunk_size=chunk_size,
        grad_clip=1e9,
        encoder={"padding_side": padding_side},
        packing=packing,
        grad_cache=grad_cache,
    )
    trainer = Trainer(config)
    assert trainer.packed == packing
    batch = [
        {"x": "word " * (1 + 3 * i % 11), "y": f"document {i} " + "text " * (2 * i % 9)}
        for i in range(8)
    ]
    tokens = trainer.encoder.tokens
    side = side_chunks(
        tokens, tokens.encode([r["x"] for r in batch], "query"), "query", trainer.plan
    )
    # padded chunks cut wherever it saves padding; packed rows only at their row limit
    assert len(side.chunks) > 1 or (packing and chunk_size >= 8)
    assert sorted(side.order.tolist()) == list(range(8))

    encoder, loss_fn = trainer.encoder, trainer.loss_fn
    xs, ys = [r["x"] for r in batch], [r["y"] for r in batch]
    expected_loss = loss_fn(
        encoder(encoder.tokenize(xs, "query")),
        encoder(encoder.tokenize(ys, "document")),
        x_keys=torch.tensor([key_of(t) for t in xs]),
        y_keys=torch.tensor([key_of(t) for t in ys]),
    )
    expected_loss.backward()
    expected = {
        n: p.grad.to_dense().clone() for n, p in encoder.named_parameters() if p.grad is not None
    }
    row = trainer.train_step(batch)
    assert row["loss"] == pytest.approx(expected_loss.item(), abs=1e-5)
    got = {n: p.grad for n, p in encoder.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def test_bad_settings_and_data_fail_before_any_work(tiny_bert, pairs_file, tmp_path):
    with pytest.raises(InputError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(InputError, match="schedule must be"):
        TrainConfig(schedule="exponential")
    with pytest.raises(InputError, match="unknown config key 'lerning_rate'"):
        TrainConfig.load(None, lerning_rate=0.1)
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("- not\n- a mapping\n")
    with pytest.raises(InputError, match="must be a mapping"):
        TrainConfig.load(yaml_file)
    yaml_file.write_text(f"model: {tiny_bert}\nbatch_size: 4\n")
    assert TrainConfig.load(yaml_file, batch_size=8).batch_size == 8
    with pytest.raises(InputError, match="no training data"):
        Trainer(TrainConfig(model=str(tiny_bert), output=str(tmp_path / "x")))
    negatives = tmp_path / "negatives.jsonl"
    negatives.write_text(
        json.dumps({"x": "a", "y": "b", "neg": ["c", "d"]})
        + "\n"
        + json.dumps({"x": "e", "y": "f", "neg": ["g"]})
        + "\n"
    )
    with pytest.raises(InputError, match="same number of hard negatives"):
        train(
            _config(
                tiny_bert,
                negatives,
                tmp_path / "n",
                batch_size=2,
                shuffle_buffer=1,
                hard_negatives="neg",
            ),
            show_progress=False,
        )
    with pytest.raises(InputError, match="no such pairs file"):
        Trainer(_config(tiny_bert, tmp_path / "missing.jsonl", tmp_path / "y"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no pairs"):
        train(_config(tiny_bert, empty, tmp_path / "z"), show_progress=False)
    with pytest.raises(CptError, match="no such file or folder"):
        Trainer(_config(tmp_path / "no-model", pairs_file, tmp_path / "w"))


def test_encoder_settings_from_yaml_shape_the_trained_model(tiny_llama, pairs_file, tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        "encoder:\n  delimiters: {query: ['<q>', '</q>'], document: ['<q>', '</q>']}\n"
        "  pooling: mean\n"
    )
    flags = vars(_config(tiny_llama, pairs_file, tmp_path / "run", max_steps=2))
    config = TrainConfig.load(yaml_file, **{k: v for k, v in flags.items() if k != "encoder"})
    assert config.encoder["pooling"] == "mean"
    trained = Encoder.load(train(config, show_progress=False))
    assert trained.config.pooling == "mean"
    assert trained.config.delimiters["document"] == ("<q>", "</q>")
    with pytest.raises(InputError, match="pooling must be"):
        Trainer(_config(tiny_llama, pairs_file, tmp_path / "bad", encoder={"pooling": "max"}))
    with pytest.raises(InputError, match="encoder must be a mapping"):
        TrainConfig(encoder=["pooling", "mean"])


@pytest.mark.parametrize(
    "schedule, factors",
    [
        ("linear", [0, 0.5, 1, 0.75, 0.5, 0.25, 0]),
        ("cosine", [0, 0.5, 1, 0.5 + 0.5**1.5, 0.5, 0.5 - 0.5**1.5, 0]),
        ("constant", [0, 0.5, 1, 1, 1, 1, 1]),
    ],
)
def test_the_schedule_is_transformers_and_resumes_from_its_state(
    tiny_bert, pairs_file, tmp_path, schedule, factors
):
    """Two warm-up steps from lr 0 (transformers' convention: step k at k / warm-up), then
    the schedule; its state, saved as safetensors, puts a new scheduler at the same place."""
    config = _config(tiny_bert, pairs_file, tmp_path, schedule=schedule, warmup=0.34)
    trainer = Trainer(config)
    lrs = []
    for _ in range(config.max_steps + 1):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()  # no gradients: the weights stay
        trainer.scheduler.step()
        if len(lrs) == 3:
            save_state(trainer.scheduler.state_dict(), tmp_path / "schedule.safetensors")
    assert lrs == pytest.approx([config.lr * f for f in factors])
    resumed = Trainer(TrainConfig(**{**config.to_dict(), "output": str(tmp_path / "again")}))
    resumed.scheduler.load_state_dict(load_state(tmp_path / "schedule.safetensors"))
    rest = [resumed.scheduler.get_last_lr()[0]]  # where it was saved: after three steps
    for _ in range(config.max_steps - 3):
        resumed.optimizer.step()
        resumed.scheduler.step()
        rest.append(resumed.scheduler.get_last_lr()[0])
    assert rest == pytest.approx(lrs[3:])


def test_periodic_evaluation_is_a_callback_run_every_eval_every_steps(
    tiny_bert, pairs_file, tmp_path
):
    """Training needs no evaluation data: the caller passes the evaluation in. Rank 0 runs
    it after every eval_every-th step on the Encoder being trained, logs its scores, and
    training goes on in train mode. eval_every without a callback is refused up front."""
    with pytest.raises(InputError, match="eval_every 2 needs an evaluation callback"):
        train(_config(tiny_bert, pairs_file, tmp_path / "none", eval_every=2), show_progress=False)
    assert not (tmp_path / "none").exists()

    seen = []

    def fake_evaluation(encoder: Encoder) -> dict[str, float]:
        seen.append(encoder.training)
        encoder.eval()  # as the real evaluation does
        return {"fake": float(len(seen))}

    trainer = Trainer(
        _config(tiny_bert, pairs_file, tmp_path / "run", eval_every=2), evaluate=fake_evaluation
    )
    trainer.run(show_progress=False)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 2, 3, 4, 4, 5, 6, 6]
    assert [r for r in rows if "eval" in r] == [
        {"step": 2, "eval": {"fake": 1.0}},
        {"step": 4, "eval": {"fake": 2.0}},
        {"step": 6, "eval": {"fake": 3.0}},
    ]
    assert seen == [True, True, True] and trainer.encoder.training


def test_cpt_train_evaluates_every_eval_every_steps(
    tiny_bert, pairs_file, mini_data, tmp_path, monkeypatch
):
    """The command builds the periodic evaluation from cpt_embed.eval and passes it in."""
    monkeypatch.setenv("CPT_DATA", str(mini_data))
    flags = ["--model", str(tiny_bert), "--data", str(pairs_file), "--output", str(tmp_path)]
    flags += ["--batch-size", "8", "--max-steps", "2", "--max-length", "16", "--log-every", "1"]
    result = CliRunner().invoke(
        app, ["train", *flags, "--eval-every", "2", "--eval-tasks", "sickr"]
    )
    assert result.exit_code == 0, result.output
    evals = [r for r in _rows(tmp_path) if "eval" in r]
    assert [(r["step"], list(r["eval"])) for r in evals] == [(2, ["sickr"])]


def test_metrics_rows_carry_speed_and_mfu(tiny_bert, pairs_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    train(_config(tiny_bert, pairs_file, tmp_path / "run", max_steps=2), show_progress=False)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert {"loss", "lr", "pairs_per_s", "tokens_per_s", "mfu", "waiting"} <= row.keys()
        assert row["pairs_per_s"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] > 0
        # a pair has at least two tokens a side (BERT's CLS and SEP)
        assert row["tokens_per_s"] >= 4 * row["pairs_per_s"]
        assert 0 <= row["waiting"] <= 1


def test_the_pair_stream_gives_the_step_its_records_would(
    tiny_bert_no_dropout, pairs_file, tmp_path, monkeypatch
):
    """run() on the cached token ids of the stream's first batch logs the loss (and makes
    the update) that train_step makes on that batch's records tokenized afresh."""
    from cpt_embed.train.data import PairStore, batches, pair_stream
    from cpt_embed.train.sources import parse_sources

    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    config = _config(tiny_bert_no_dropout, pairs_file, tmp_path / "stream", max_steps=1)
    streamed = Trainer(config)
    streamed.run(show_progress=False)
    (loss,) = _losses(tmp_path / "stream")

    fresh = Trainer(TrainConfig(**{**config.to_dict(), "output": str(tmp_path / "records")}))
    store = PairStore(parse_sources(config.data), fresh.encoder.tokens, config.hard_negatives)
    stream = pair_stream(store, config.seed, config.shuffle_buffer)
    refs = next(batches(stream, store, config.batch_size))
    assert {(source, file) for source, file, _ in refs} == {(0, 0)}
    lines = pairs_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(lines[row]) for _, _, row in refs]
    assert [r["x"] for r in records] != [r["x"] for r in _records(pairs_file, 16)]  # shuffled
    row = fresh.train_step(records)
    assert row["loss"] == pytest.approx(loss, abs=1e-5)
    trained = dict(streamed.encoder.backbone.named_parameters())
    for name, param in fresh.encoder.backbone.named_parameters():
        torch.testing.assert_close(param, trained[name], atol=1e-6, rtol=1e-5, msg=name)


def test_the_plan_line_says_packed_rows_or_padded_chunks(tiny_bert, pairs_file, tmp_path):
    packed = Trainer(_config(tiny_bert, pairs_file, tmp_path / "packed"))
    assert packed.packed
    line = packed.plan_line()
    assert "packed rows" in line and "padded chunks" not in line
    assert "up to 8 texts of <= 32 tokens" in line and "MiB" in line
    padded = Trainer(_config(tiny_bert, pairs_file, tmp_path / "padded", packing=False))
    assert not padded.packed
    line = padded.plan_line()
    assert "padded chunks" in line and "packed rows" not in line
    tokens = Trainer(_config(tiny_bert, pairs_file, tmp_path / "tokens", chunk_tokens=200))
    assert "up to 200 tokens" in tokens.plan_line()


def test_gradients_are_cached_only_where_the_batch_would_not_fit(tiny_bert, pairs_file, tmp_path):
    """By default a batch of several chunks runs in one graph while its activations fit the
    memory set aside for them (no second forward pass) and with gradient caching past it;
    grad_cache True or False says so for every batch."""
    records = [json.loads(line) for line in pairs_file.read_text().splitlines()[:16]]
    trainer = Trainer(_config(tiny_bert, pairs_file, tmp_path / "auto", chunk_size=4))
    batch = from_records(records, trainer.encoder.tokens, trainer.plan)
    assert len(batch.sides[0].chunks) > 1
    assert not trainer.caches(batch) and "only for batches whose activations pass" in (
        trainer.plan_line()
    )
    trainer.uncached_bytes = trainer.bytes_per_token  # room for one token: it must cache
    assert trainer.caches(batch)
    for setting in (True, False):
        forced = Trainer(
            _config(
                tiny_bert, pairs_file, tmp_path / str(setting), chunk_size=4, grad_cache=setting
            )
        )
        assert forced.caches(batch) is setting
    one_chunk = from_records(records, trainer.encoder.tokens, replace(trainer.plan, max_rows=64))
    assert not forced.caches(one_chunk) and not trainer.caches(one_chunk)


def test_embeddings_during_training_come_from_the_current_weights(
    tiny_bert_no_dropout, pairs_file, tmp_path
):
    """A periodic evaluation encodes (in bfloat16, from a cast copy) the weights of this step,
    not those of the first evaluation: each optimiser step marks the weights updated."""
    trainer = Trainer(_config(tiny_bert_no_dropout, pairs_file, tmp_path, lr=1e-2))
    texts = ["a question about rivers", "an answer that explains birds well"]
    records = _records(pairs_file, 16)
    for _ in range(2):
        trainer.train_step(records)
        trainer.encoder.eval()
        fast = trainer.encoder.encode(texts, dtype="bf16")
        exact = trainer.encoder.encode(texts, dtype="float32")
        assert (fast * exact).sum(1).min() > 0.999
        trainer.encoder.train()


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("--grad-cache", "gradient caching whenever a side takes several chunks"),
        ("--no-grad-cache", "no gradient caching"),
    ],
)
def test_cpt_train_says_its_chunk_plan_before_the_first_step(
    tiny_bert, pairs_file, tmp_path, monkeypatch, flag, said
):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    flags = ["--model", str(tiny_bert), "--data", str(pairs_file), "--output", str(tmp_path)]
    flags += ["--batch-size", "8", "--chunk-size", "4", "--max-steps", "1", "--max-length", "16"]
    result = CliRunner().invoke(app, ["train", *flags, flag])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("chunks:")]
    assert "up to 4 texts of <= 16 tokens" in line and "MiB of activations" in line
    assert said in line
