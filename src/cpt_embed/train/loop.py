"""The training loop, top to bottom: set up (model, loss, optimiser, schedule, processes),
then step: take a global batch, keep this process's slice, run a gradient-cached
contrastive step, clip, update; log, checkpoint, evaluate; save the final Encoder."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_file
from cpt_embed.errors import InputError
from cpt_embed.model import Encoder
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.data import batches, key_of, pair_stream, parse_sources
from cpt_embed.train.grad_cache import Batch, GradCache, length_groups
from cpt_embed.train.loss import ContrastiveLoss, world
from cpt_embed.train.state import load_state, save_state

CHECKPOINTS = "checkpoints"
STATE = "state.safetensors"
# Settings that decide the data stream and the optimiser state: resuming needs the same.
RESUME_MUST_MATCH = (
    "batch_size",
    "data",
    "seed",
    "max_steps",
    "schedule",
    "lr",
    "warmup",
    "shuffle_buffer",
    "learn_tau",
    "hard_negatives",
    "weight_decay",
    "encoder",
)
# The fixed cost of one more forward and backward pass, in padded tokens: a side is cut into
# chunks of similar length where the padding saved outweighs it. The CPU figure is measured
# with all-MiniLM-L6-v2; the other is an estimate (GPUs run small passes at the speed of
# their kernel launches, so they cut only where much padding is saved).
PASS_COST_TOKENS = {"cpu": 64, "other": 4096}


def _rng_state() -> dict[str, Any]:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


# torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `srun` without torchrun sets these instead
SLURM_ENV = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun (or SLURM's srun, with MASTER_ADDR and MASTER_PORT
    set) describes: gloo on CPU, NCCL on GPUs."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise InputError(
                f"SLURM task without {' and '.join(missing)}: export MASTER_ADDR=<first node> "
                "MASTER_PORT=29500 in the job script, or launch with torchrun"
            )
        os.environ.update({ours: os.environ[theirs] for ours, theirs in SLURM_ENV.items()})
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return world()


def _schedule(config: TrainConfig):
    warmup = int(config.warmup * config.max_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, config.max_steps - warmup)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def _rows(batch: Batch, rows: list[int], width: int, left: bool) -> Batch:
    """Rows of a padded batch as a batch of their own, `width` tokens wide: the same tensors
    tokenizing those texts alone gives."""
    index = torch.tensor(rows, device=batch["input_ids"].device)
    shift = batch["input_ids"].shape[1] - width if left else 0
    out = {}
    for key, value in batch.items():
        value = value.index_select(0, index)
        # token tensors lose the padding columns; positions move with them
        out[key] = value[:, shift : shift + width] if value.ndim == 2 else value - shift
    return out


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete checkpoint folder under output/checkpoints."""
    folder = output / CHECKPOINTS
    found = (
        sorted(p for p in folder.glob("step-*") if (p / STATE).is_file()) if folder.is_dir() else []
    )
    return found[-1] if found else None


class Trainer:
    """One training run; `run()` does it all, `train_step` is one optimiser step."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.rank, self.world = init_distributed()
        if config.batch_size % self.world:
            raise InputError(
                f"batch_size {config.batch_size} must divide evenly over {self.world} processes"
            )
        self.output = Path(config.output)
        self.sources = parse_sources(config.data)
        if torch.cuda.is_available() and config.device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        else:
            device = config.device or "cpu"
        checkpoint = latest_checkpoint(self.output) if config.resume else None
        if config.resume and checkpoint is None:
            raise InputError(f"--resume: no checkpoint in {self.output / CHECKPOINTS}")
        if not config.resume and latest_checkpoint(self.output) is not None:
            raise InputError(
                f"{self.output} holds checkpoints; pass --resume to go on or "
                "choose another --output"
            )
        overrides = {} if checkpoint else dict(config.encoder)
        if config.max_length:
            overrides["max_length"] = config.max_length
        torch.manual_seed(config.seed)
        try:
            self.encoder = Encoder.load(
                checkpoint / "model" if checkpoint else config.model, device=device, **overrides
            ).train()
        except (TypeError, ValueError) as err:
            raise InputError(f"model {config.model!r} with settings {overrides}: {err}") from None
        if config.gradient_checkpointing:
            self.encoder.backbone.gradient_checkpointing_enable()
        self.loss_fn = ContrastiveLoss(config.tau_init, config.tau_max, config.learn_tau).to(
            self.encoder.device
        )
        self.model = self.encoder
        if self.world > 1:
            # find_unused_parameters: backbones carry layers pooling never reads (BERT's pooler)
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.encoder,
                find_unused_parameters=True,
                device_ids=[self.encoder.device.index]
                if self.encoder.device.type == "cuda"
                else None,
            )
        # fused: one kernel for all parameters (as the Hugging Face Trainer does by default)
        self.optimizer = torch.optim.AdamW(
            self._param_groups(), lr=config.lr, fused=self.encoder.device.type in ("cpu", "cuda")
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(config))
        autocast = None
        if config.dtype == "bfloat16":

            def autocast():
                return torch.autocast(self.encoder.device.type, dtype=torch.bfloat16)

        self.cache = GradCache(
            self.model, autocast=autocast, no_sync=self.model.no_sync if self.world > 1 else None
        )
        self._word_grad = self._sparse_word_gradients()
        self.step = 0
        self.batches_done = 0
        if checkpoint is not None:
            self._load_state(checkpoint)

    def _sparse_word_gradients(self) -> torch.Tensor | None:
        """A kept gradient buffer for the word embeddings, which then back-propagate sparse
        rows into it: each forward pass otherwise allocates and fills a dense vocabulary-sized
        gradient (45 MiB for MiniLM), a cost paid again for every chunk. One process only
        (DistributedDataParallel reduces the dense gradient)."""
        embeddings = self.encoder.backbone.get_input_embeddings()
        if self.world > 1 or not isinstance(embeddings, torch.nn.Embedding):
            return None
        if not embeddings.weight.requires_grad:
            return None
        embeddings.sparse = True
        return torch.zeros_like(embeddings.weight)

    def _param_groups(self) -> list[dict[str, Any]]:
        decay, no_decay = [], []
        for name, param in self.encoder.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        no_decay += [p for p in self.loss_fn.parameters() if p.requires_grad]
        return [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # ------------------------------------------------------------------ one step
    def _chunks(self, texts: list[str], side: str) -> tuple[list[Batch], torch.Tensor]:
        """The side tokenized once, cut into chunks of similar length (each padded to its
        own longest text), and the text each row of the chunks holds."""
        whole = self.encoder.tokenize(texts, side)
        lengths = whole["attention_mask"].sum(1).tolist()
        cost = PASS_COST_TOKENS.get(self.encoder.device.type, PASS_COST_TOKENS["other"])
        groups = length_groups(lengths, self.config.chunk_size, cost)
        left = self.encoder.config.padding_side == "left"
        chunks = [_rows(whole, group, max(lengths[i] for i in group), left) for group in groups]
        order = torch.tensor([i for group in groups for i in group])
        return chunks, order

    def train_step(self, batch: list[dict]) -> dict[str, float]:
        """One update on a global batch (every process passes the same batch)."""
        share = len(batch) // self.world
        local = batch[self.rank * share : (self.rank + 1) * share]
        xs, ys = [r["x"] for r in local], [r["y"] for r in local]
        texts = [(xs, "query"), (ys, "document")]
        if self.config.hard_negatives:
            negatives = [n for r in local for n in r[self.config.hard_negatives]]
            texts.append((negatives, "document"))
        sides, orders = zip(*(self._chunks(t, side) for t, side in texts), strict=True)
        device = self.encoder.device
        keys = {
            "x_keys": torch.tensor([key_of(t) for t in xs], device=device),
            "y_keys": torch.tensor([key_of(t) for t in ys], device=device),
        }
        self.optimizer.zero_grad(set_to_none=True)
        if self._word_grad is not None:
            self.encoder.backbone.get_input_embeddings().weight.grad = self._word_grad.zero_()
        loss = self.cache.step(
            sides,
            self.loss_fn,
            orders=orders,
            cache=any(len(t) > self.config.chunk_size for t, _ in texts),
            **keys,
        )
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.batches_done += 1
        return {
            "loss": float(loss),
            "scale": float(self.loss_fn.scale.detach()),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
        }

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> Path:
        """Write output/checkpoints/step-N (model folder, each process's RNG, then the state file
        last: a folder without the state file is incomplete and never resumed from); keep the
        newest `keep_last`."""
        path = self.output / CHECKPOINTS / f"step-{self.step:07d}"
        if self.rank == 0:
            self._save_model(path)
        save_state(_rng_state(), path / f"rng-rank{self.rank}.safetensors")
        if self.world > 1:
            dist.barrier()
        if self.rank == 0:
            save_state(self._state(), path / STATE)
            folders = sorted(path.parent.glob("step-*"))
            done = [p for p in folders if (p / STATE).is_file()]
            # older folders without a state file: a kill left them while writing or deleting
            stale = [p for p in folders if p < path and not (p / STATE).is_file()]
            for old in done[: -self.config.keep_last] + stale:
                shutil.rmtree(old, ignore_errors=True)
        if self.world > 1:
            dist.barrier()
        return path

    def _save_model(self, path: Path) -> None:
        # the Encoder folder of a checkpoint or of the final model, with tau and a summary
        self.encoder.config.logit_scale = float(self.loss_fn.scale.detach())
        self.encoder.config.training = self.summary()
        self.encoder.save(path / "model")

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "batches_done": self.batches_done,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "world_size": self.world,
            "config": self.config.to_dict(),
        }

    def _load_state(self, checkpoint: Path) -> None:
        state = load_state(checkpoint / STATE)
        changed = [
            k for k in RESUME_MUST_MATCH if state["config"].get(k) != self.config.to_dict().get(k)
        ]
        if changed:
            raise InputError(
                f"{checkpoint}: --resume with different {', '.join(changed)} than "
                "the run that wrote it; use the original settings"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        rng = checkpoint / f"rng-rank{self.rank}.safetensors"
        if rng.is_file():  # absent when resuming on more processes than wrote it
            saved = load_state(rng)
            torch.set_rng_state(saved["cpu"])
            if saved["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda"])
        self.step, self.batches_done = state["step"], state["batches_done"]

    def summary(self) -> dict[str, Any]:
        """What went into the model, stored in its cpt_config.json."""
        return {
            "base_model": self.config.model,
            "steps": self.step,
            "batch_size": self.config.batch_size,
            "pairs_seen": self.step * self.config.batch_size,
            "data": self.config.data,
            "lr": self.config.lr,
            "world_size": self.world,
            "tau": float(self.loss_fn.tau.detach()),
        }

    # ------------------------------------------------------------------ the run
    def run(self, show_progress: bool = True) -> Path:
        """Train to max_steps (from the checkpoint when resuming); return the model folder."""
        config = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        stream = batches(
            pair_stream(self.sources, config.seed, config.shuffle_buffer),
            config.batch_size,
            config.hard_negatives,
        )
        for _ in range(self.batches_done):  # replay the data up to the saved position
            next(stream)
        metrics = self.output / "metrics.jsonl"
        if self.rank == 0:
            _trim_log(metrics, self.step)
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            unit="step",
            desc="training",
            disable=not show_progress or self.rank != 0,
            dynamic_ncols=True,
        )
        started, pairs = time.perf_counter(), 0
        stop = _StopFlag()
        try:
            with bar, open(metrics, "a", encoding="utf-8") as log, stop:
                while self.step < config.max_steps:
                    if stop.raised:
                        raise KeyboardInterrupt
                    row = self.train_step(next(stream))
                    pairs += config.batch_size
                    row["pairs_per_s"] = pairs / (time.perf_counter() - started)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{row['loss']:.4f}",
                        scale=f"{row['scale']:.1f}",
                        lr=f"{row['lr']:.2e}",
                        pairs_s=f"{row['pairs_per_s']:.0f}",
                        refresh=False,
                    )
                    if self.rank == 0 and (
                        self.step % config.log_every == 0 or self.step == config.max_steps
                    ):
                        log.write(json.dumps({"step": self.step, **row}) + "\n")
                        log.flush()
                    if config.eval_every and self.step % config.eval_every == 0:
                        self._evaluate(log)
                    if self.step % config.save_every == 0 and self.step < config.max_steps:
                        self.save_checkpoint()
        except KeyboardInterrupt:
            saved = self.save_checkpoint()
            raise KeyboardInterrupt(f"interrupted; saved {saved}, go on with --resume") from None
        self.save_checkpoint()
        if self.rank == 0:
            self._save_model(self.output)
        return self.output / "model"

    def _evaluate(self, log) -> None:
        if self.rank != 0:
            if self.world > 1:
                dist.barrier()  # wait for rank 0's evaluation
            return
        from cpt_embed.eval import evaluate, select_tasks
        from cpt_embed.eval.data import find_data_dir

        report = evaluate(
            self.encoder,
            select_tasks(self.config.eval_tasks),
            find_data_dir(),
            cache_dir=None,
            show_progress=False,
        )
        self.encoder.train()
        log.write(
            json.dumps({"step": self.step, "eval": {r.task: r.score for r in report.results}})
            + "\n"
        )
        log.flush()
        if self.world > 1:
            dist.barrier()


def _trim_log(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to `step`: a run killed after its last checkpoint
    logged steps that the resumed (or restarted) run logs again, and maybe half a line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        with contextlib.suppress(ValueError):
            if line.endswith("\n") and json.loads(line)["step"] <= step:
                kept.append(line)
    with atomic_file(path, "w") as handle:
        handle.writelines(kept)


class _StopFlag:
    """While active, Ctrl-C (SIGINT) only raises a flag, so the loop stops between steps
    and the checkpoint holds a whole step, never half an optimiser update."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(config: TrainConfig, show_progress: bool = True) -> Path:
    """Run `config` to the end; the trained Encoder's folder. Under torchrun, every process
    calls this and the process group is closed at the end."""
    try:
        return Trainer(config).run(show_progress=show_progress)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
