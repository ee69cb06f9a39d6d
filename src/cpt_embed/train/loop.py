"""The training loop, top to bottom: set up (processes, model, packed rows, loss, optimiser,
schedule, chunk size), then step: take the next batch a background thread has prepared
(token ids from the cache, each side cut into chunks), run a gradient-cached contrastive
step, clip, update; log (tokens/s, MFU), evaluate (a callback the caller passes in),
checkpoint; save the final Encoder. Nothing inside a step waits for the device: losses and
norms are read back only on log lines."""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from cpt_embed.errors import InputError
from cpt_embed.model import Encoder
from cpt_embed.model.runtime.copy import mark_updated
from cpt_embed.model.runtime.dropout import use_fast_dropout
from cpt_embed.model.runtime.packed import enable_packed_training
from cpt_embed.model.runtime.packing import use_training_linears
from cpt_embed.model.runtime.threads import GOVERNOR
from cpt_embed.train.batch import StepBatch, from_records, from_refs
from cpt_embed.train.checkpoints import (
    load_checkpoint,
    save_checkpoint,
    start_checkpoint,
    trim_log,
)
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.data import PairStore, batches, pair_stream
from cpt_embed.train.distributed import barrier, data_parallel, init_distributed
from cpt_embed.train.grad_cache import GradCache
from cpt_embed.train.loader import Prefetcher
from cpt_embed.train.loss import ContrastiveLoss
from cpt_embed.train.memory import (
    activation_bytes_per_token,
    chunk_plan,
    chunk_tokens_bound,
    uncached_budget,
)
from cpt_embed.train.meter import Meter
from cpt_embed.train.setup import autocast_for, load_encoder, optimizer_for, scheduler_for
from cpt_embed.train.sources import parse_sources

# Periodic evaluation: scores by task name for the Encoder as it is at that step.
Evaluation = Callable[[Encoder], dict[str, float]]
# Batches prepared ahead of the step that runs.
PREFETCH = 2


class Trainer:
    """One training run; `run()` does it all, `train_step` is one optimiser step.
    `evaluate`, needed when config.eval_every is set, scores the Encoder every eval_every
    steps (on rank 0; the CLI builds it with cpt_embed.eval.periodic)."""

    def __init__(self, config: TrainConfig, *, evaluate: Evaluation | None = None) -> None:
        if config.eval_every and evaluate is None:
            raise InputError(
                f"eval_every {config.eval_every} needs an evaluation callback: pass "
                "evaluate=periodic_evaluation(config.eval_tasks) (cpt_embed.eval.periodic; "
                "`cpt train` does) or set eval_every to 0"
            )
        self.config, self.evaluate = config, evaluate
        self.rank, self.world = init_distributed()
        if config.batch_size % self.world:
            raise InputError(
                f"batch_size {config.batch_size} must divide evenly over {self.world} processes"
            )
        self.output = Path(config.output)
        self.sources = parse_sources(config.data)
        checkpoint = start_checkpoint(self.output, config.resume)
        torch.manual_seed(config.seed)
        self.encoder = load_encoder(config, checkpoint)
        self.packed = config.packing and enable_packed_training(self.encoder.backbone)
        use_fast_dropout(self.encoder.backbone)
        use_training_linears(self.encoder.backbone)
        self.loss_fn = ContrastiveLoss(
            config.tau_init, config.tau_max, config.learn_tau, config.false_negative_margin
        ).to(self.encoder.device)
        self.model = data_parallel(self.encoder, self.encoder.device)
        self.optimizer = optimizer_for(self.encoder, self.loss_fn, config)
        # fused AdamW bumps no version counter: say each step changed the weights
        self.optimizer.register_step_post_hook(lambda *_: mark_updated(self.encoder))
        self.scheduler = scheduler_for(self.optimizer, config)
        autocast = autocast_for(config, self.encoder.device)
        self.cache = GradCache(
            self.model, autocast=autocast, no_sync=self.model.no_sync if self.world > 1 else None
        )
        self._word_grad = self._sparse_word_gradients()
        with torch.random.fork_rng(devices=self.cache.devices):
            per_token = activation_bytes_per_token(
                self.encoder, self.encoder.tokens, self.packed, autocast
            )
        self.plan = chunk_plan(
            self.encoder, self.packed, config.chunk_size, config.chunk_tokens, per_token
        )
        self.chunk_bytes = per_token * chunk_tokens_bound(self.plan, self.encoder.config.max_length)
        self.bytes_per_token = per_token
        self.uncached_bytes = uncached_budget(self.encoder, self.plan, per_token)
        self.meter = Meter(self.encoder, config.dtype)
        self.step = 0
        self.batches_done = 0
        if checkpoint is not None:
            self._restore(load_checkpoint(checkpoint, config.to_dict()))

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

    # ------------------------------------------------------------------ one step
    def run_step(self, batch: StepBatch) -> dict[str, torch.Tensor]:
        """One update on this process's share of a global batch; the loss and the gradient
        norm stay on the device (reading them would wait for it)."""
        device = self.encoder.device
        sides = [
            [{k: v.to(device, non_blocking=True) for k, v in c.items()} for c in side.chunks]
            for side in batch.sides
        ]
        keys = {k: v.to(device, non_blocking=True) for k, v in (batch.keys or {}).items()}
        self.optimizer.zero_grad(set_to_none=True)
        if self._word_grad is not None:
            self.encoder.backbone.get_input_embeddings().weight.grad = self._word_grad.zero_()
        loss = self.cache.step(
            sides,
            self.loss_fn,
            orders=[side.order for side in batch.sides],
            cache=self.caches(batch),
            **keys,
        )
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.batches_done += 1
        return {"loss": loss, "grad_norm": grad_norm}

    def train_step(self, records: list[dict]) -> dict[str, float]:
        """One update on a global batch of pair records (every process passes the same);
        texts shared by pairs mask each other in the loss."""
        batch = from_records(
            records,
            self.encoder.tokens,
            self.plan,
            self.config.hard_negatives,
            rank=self.rank,
            world=self.world,
        )
        row = self.run_step(batch)
        return {
            "loss": float(row["loss"]),
            "scale": float(self.loss_fn.scale.detach()),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(row["grad_norm"]),
        }

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> Path:
        """Write output/checkpoints/step-N (see checkpoints.save_checkpoint); every process
        calls this."""
        return save_checkpoint(
            self.output, self.step, self._state, self._save_model, self.config.keep_last
        )

    def _save_model(self, folder: Path) -> None:
        # the Encoder folder of a checkpoint or of the final model, with tau and a summary
        self.encoder.config.logit_scale = float(self.loss_fn.scale.detach())
        self.encoder.config.training = self.summary()
        self.encoder.save(folder)

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

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
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
            **self.meter.totals(),
        }

    # ------------------------------------------------------------------ the run
    def run(self, show_progress: bool = True) -> Path:
        """Train to max_steps (from the checkpoint when resuming); return the model folder."""
        config = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        store = self._pair_store(show_progress)
        stream = batches(
            pair_stream(store, config.seed, config.shuffle_buffer), store, config.batch_size
        )
        for _ in range(self.batches_done):  # replay the data up to the saved position
            next(stream)
        metrics = self.output / "metrics.jsonl"
        if self.rank == 0:
            trim_log(metrics, self.step)
        show = show_progress and self.rank == 0
        if show:
            tqdm.write(self.plan_line())
        prepare = functools.partial(
            from_refs,
            store,
            tokens=self.encoder.tokens,
            plan=self.plan,
            rank=self.rank,
            world=self.world,
            pin=self.encoder.device.type == "cuda",
        )
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            unit="step",
            desc="training",
            disable=not show,
            dynamic_ncols=True,
        )
        stop = _StopFlag()
        try:
            with (
                Prefetcher(stream, prepare, PREFETCH) as loader,
                bar,
                stop,
                open(metrics, "a", encoding="utf-8") as log,
            ):
                self._steps(loader, log, bar, stop)
        except KeyboardInterrupt:
            saved = self.save_checkpoint()
            raise KeyboardInterrupt(f"interrupted; saved {saved}, go on with --resume") from None
        self.save_checkpoint()
        if self.rank == 0:
            self._save_model(self.output / "model")
            if show:
                tqdm.write(self.meter.summary_line())
        return self.output / "model"

    def _steps(self, loader: Prefetcher, log: IO[str], bar: tqdm, stop: _StopFlag) -> None:
        """Steps to max_steps: each on the next prepared batch (on CPU, on the cores other
        processes leave free), logged, evaluated and checkpointed on schedule."""
        with GOVERNOR.running(self.encoder.device.type == "cpu") as threads:
            self.meter.start()
            while self.step < self.config.max_steps:
                if stop.raised:
                    raise KeyboardInterrupt
                waited = time.perf_counter()
                batch = next(loader)
                self.meter.waited(time.perf_counter() - waited)
                threads()
                self._step(batch, log, bar)

    def _step(self, batch: StepBatch, log: IO[str], bar: tqdm) -> None:
        """One step on `batch`, then its logging, evaluation and checkpoint when due."""
        config = self.config
        row = self.run_step(batch)
        self.meter.add(batch, config.batch_size, cached=self.caches(batch))
        bar.update(1)
        if self.step % config.log_every == 0 or self.step == config.max_steps:
            values = self.meter.row(row, self.loss_fn, self.scheduler)  # waits for the device
            bar.set_postfix(
                loss=f"{values['loss']:.4f}",
                pairs_s=f"{values['pairs_per_s']:.0f}",
                mfu=f"{values['mfu']:.1%}",
                refresh=False,
            )
            if self.rank == 0:
                log.write(json.dumps({"step": self.step, **values}) + "\n")
                log.flush()
        if config.eval_every and self.step % config.eval_every == 0:
            self._evaluate(log)
        if self.step % config.save_every == 0 and self.step < config.max_steps:
            self.save_checkpoint()

    def caches(self, batch: StepBatch) -> bool:
        """Whether `batch` runs with gradient caching: where a side takes several chunks and
        (unless config.grad_cache says) all its activations would pass the memory set
        aside for them; else every chunk stays in one graph, saving a forward pass."""
        if not any(len(side.chunks) > 1 for side in batch.sides):
            return False
        if self.config.grad_cache is not None:
            return self.config.grad_cache
        tokens = sum(int(lengths.sum()) for lengths in batch.lengths)
        return tokens * self.bytes_per_token > self.uncached_bytes

    def _pair_store(self, show_progress: bool) -> PairStore:
        """The token ids of the training pairs: rank 0 tokenizes what the cache lacks while
        the others wait, then every process reads the cache."""
        if self.rank != 0:
            barrier()
        store = PairStore(
            self.sources,
            self.encoder.tokens,
            self.config.hard_negatives,
            show_progress=show_progress and self.rank == 0,
        )
        if self.rank == 0:
            barrier()
        return store

    def plan_line(self) -> str:
        """How a side is cut into chunks and the memory one chunk takes, said before the
        first step."""
        plan, length = self.plan, self.encoder.config.max_length
        layout = "packed rows" if self.packed else "padded chunks"
        limit = (
            f"up to {plan.max_tokens:,} tokens"
            if plan.max_tokens
            else f"up to {plan.max_rows} texts of <= {length} tokens"
        )
        if self.config.grad_cache is False:
            caching = "no gradient caching (every chunk in one graph)"
        elif self.config.grad_cache:
            caching = "gradient caching whenever a side takes several chunks"
        else:
            caching = (
                f"gradient caching only for batches whose activations pass "
                f"{self.uncached_bytes / 2**30:,.1f} GiB (about "
                f"{self.uncached_bytes / max(self.bytes_per_token, 1):,.0f} tokens)"
            )
        return (
            f"chunks: {layout} of {limit}; a chunk keeps about {self.chunk_bytes / 2**20:,.0f} "
            f"MiB of activations for its backward pass; {caching}"
        )

    def _evaluate(self, log: IO[str]) -> None:
        """Rank 0 scores the Encoder with the evaluation callback and logs the scores as
        {"step": N, "eval": {task: score}}; the other processes wait for it."""
        if self.rank == 0:
            scores = self.evaluate(self.encoder)
            self.encoder.train()
            log.write(json.dumps({"step": self.step, "eval": scores}) + "\n")
            log.flush()
        barrier()


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


def train(
    config: TrainConfig, show_progress: bool = True, *, evaluate: Evaluation | None = None
) -> Path:
    """Run `config` to the end; the trained Encoder's folder. `evaluate` scores the Encoder
    every config.eval_every steps (see Trainer). Under torchrun, every process calls this
    and the process group is closed at the end."""
    try:
        return Trainer(config, evaluate=evaluate).run(show_progress=show_progress)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
