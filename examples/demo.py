"""`make demo`: the paper's method paying off on this machine's CPU in a few minutes.

1. mine   - (docstring, function) pairs from this machine's Python (its standard library
            and the packages installed beside it): unlabeled data, nobody annotated it;
2. before - SmolLM2-135M, a GPT-style language model, used as an embedder the paper's way
            ([ ] / { } delimiters, the closing delimiter's hidden state): asked 200 CoSQA
            web questions, how often does it rank the function that answers each one
            first among the 200 functions of those questions?
3. train  - 16 steps of 32 mined pairs with the paper's contrastive loss;
4. after  - the same 200 questions;
5. search - the default model (all-MiniLM-L6-v2, already trained by its authors) indexes
            this repository's own code and answers questions about it.

The pairs and the SmolLM2 conversion are kept under runs/demo and ~/.cache/cpt-embed, so a
second run skips them. The full benchmark of the trained model is one command away (printed
at the end).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from cpt_embed import Encoder
from cpt_embed.data.mine import code_exclusions, mine_code
from cpt_embed.data.shards import pair_files, read_shard, shards_complete
from cpt_embed.errors import InputError
from cpt_embed.eval.data import find_data_dir, load_beir
from cpt_embed.eval.held_out import held_out_code, held_out_code_sets
from cpt_embed.search.build import build_index
from cpt_embed.search.query import Searcher
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path("runs/demo")
QUESTIONS = 200  # the first 200 CoSQA test questions, in the file's order
TRAIN = {
    "batch_size": 32,
    "max_steps": 16,
    "lr": 1e-4,
    "warmup": 0.1,
    "max_length": 32,
    "chunk_size": 64,
    "dtype": "bfloat16",
}
EVAL_MAX_LENGTH = 64
REPO_QUESTIONS = [
    "write a file so that a crash leaves the old version intact",
    "mine hard negatives for each pair",
    "extract docstring and code pairs from source files",
]
console = Console(highlight=False, soft_wrap=True)


@dataclass
class CodeSearchTest:
    """CoSQA questions, the functions that answer them, and which function is each one's."""

    questions: list[str]
    functions: list[str]
    answer: list[int]


def mine(data_dir: Path) -> Path:
    """Mine every (docstring, function) pair of the Python tree that holds `json`, minus
    anything in the evaluation sets; a complete earlier mining run is reused."""
    console.rule("1. mine unlabeled (docstring, function) pairs from this machine's Python")
    out = RUNS / "code-pairs"
    python = Path(json.__file__).parent.parent
    if shards_complete(out):
        console.print(f"reusing the pairs mined by an earlier run in {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
        with console.status(f"mining {python} ..."):
            exclusions = code_exclusions(held_out_code(held_out_code_sets(data_dir)))
            report = mine_code([python], out, exclusions=exclusions, show_progress=False)
        console.print(
            f"{report.pairs:,} pairs from {report.counts['files_parsed']:,} files in "
            f"{report.seconds:.0f}s ({python}); functions whose docstring or code appears in "
            "an evaluation set are left out"
        )
    pairs = [pair for path in pair_files(out) for pair in read_shard(path)]
    sample = next(
        p
        for p in pairs[len(pairs) // 2 :]
        if 30 <= len(p["x"]) <= 80 and not p["source"].startswith("site-packages")
    )
    console.print("one of them (x is the query side, y the document side):")
    console.print(f"  x: {sample['x']}")
    console.print(f"  y: {sample['y'].splitlines()[0]} ...  [dim]({sample['source']})[/]")
    return out


def code_search_test(data_dir: Path) -> CodeSearchTest:
    """The first QUESTIONS CoSQA test questions and the functions that answer them."""
    beir = load_beir(data_dir / "code_search" / "cosqa", "test")
    ids = beir.query_ids[:QUESTIONS]
    answers = [next(iter(beir.qrels[q])) for q in ids]
    pool = sorted(set(answers))
    text_of = dict(zip(beir.corpus_ids, beir.corpus_texts, strict=True))
    return CodeSearchTest(
        questions=beir.query_texts[:QUESTIONS],
        functions=[text_of[c] for c in pool],
        answer=[pool.index(a) for a in answers],
    )


def ask(encoder: Encoder, test: CodeSearchTest, label: str) -> np.ndarray:
    """Rank the functions for each question; print how often the right one comes first."""
    n = len(test.questions) + len(test.functions)
    with console.status(f"embedding {n} texts with {label} ..."):
        started = time.perf_counter()
        functions = encoder.encode(test.functions, side="document")
        questions = encoder.encode(test.questions, side="query")
        seconds = time.perf_counter() - started
    scores = questions @ functions.T
    truth = scores[np.arange(len(scores)), test.answer]
    ranks = 1 + (scores > truth[:, None]).sum(axis=1)
    console.print(
        f"{label}: [bold]{int((ranks == 1).sum())} of {len(ranks)}[/] questions get their "
        f"function ranked first among {len(test.functions)} (chance: about 1); mean "
        f"reciprocal rank [bold]{100 * np.mean(1 / ranks):.1f}[/] (100: always first) "
        f"[dim]({n} texts embedded in {seconds:.0f}s)[/]"
    )
    return ranks


def train_smollm2(pairs: Path) -> Path:
    """The paper's recipe from SmolLM2 on the mined pairs; the trained model's folder."""
    console.rule(f"3. train: {TRAIN['max_steps']} steps of {TRAIN['batch_size']} mined pairs")
    console.print(
        "the paper's contrastive loss: each docstring against every function of its batch "
        "and back (symmetric InfoNCE, learned temperature)"
    )
    out = RUNS / "smollm2-code"
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(
        model="smollm2", data=[str(pairs)], output=str(out), save_every=1000, log_every=4, **TRAIN
    )
    return Path(train(config))


def show_example(test: CodeSearchTest, before: np.ndarray, after: np.ndarray) -> None:
    """One question that training taught to find its function (the first such one)."""
    fixed = [i for i in range(len(before)) if after[i] == 1 and before[i] > 1]
    if not fixed:
        return
    i = fixed[0]
    head = test.functions[test.answer[i]].strip().splitlines()[0]
    console.print(
        f'for example "{test.questions[i]}" -> {head}\n  its rank: {before[i]} before '
        f"training, {after[i]} after"
    )


def search_this_repository() -> None:
    """Index src/ with the default model and ask it a few questions (the two best hits
    of each by hybrid search, with their fused dense and BM25 score)."""
    console.rule("5. the default model (all-MiniLM-L6-v2) searches this repository's code")
    encoder = Encoder.load("default")
    index = RUNS / "src.idx"
    shutil.rmtree(index, ignore_errors=True)
    report = build_index([ROOT / "src"], index, encoder, model_name="default", show_progress=False)
    console.print(
        f"indexed {report.chunks:,} functions and sections of {report.files} files in "
        f"{report.seconds:.0f}s"
    )
    searcher = Searcher(index, encoder, "default")
    for question in REPO_QUESTIONS:
        console.print(f'"{question}"')
        for hit in searcher.search(question, k=2):
            what = hit.name or "the module's docstring"
            console.print(f"  {hit.score:.2f}  {hit.path}:{hit.start_line}  {what}")


def main() -> None:
    """Run the five steps and say what to type next."""
    started = time.perf_counter()
    try:
        data_dir = find_data_dir()
    except InputError as err:
        raise SystemExit(f"the demo needs ../shared/data (the evaluation sets): {err}") from None
    pairs = mine(data_dir)
    test = code_search_test(data_dir)
    console.rule("2. before training: SmolLM2-135M, a GPT-style language model, as an embedder")
    with console.status("loading SmolLM2-135M (converted from GGUF once, then cached) ..."):
        start = Encoder.load("smollm2", max_length=EVAL_MAX_LENGTH)
    before = ask(start, test, "SmolLM2 as it comes")
    del start
    model = train_smollm2(pairs)
    console.rule("4. after training: the same 200 questions")
    after = ask(Encoder.load(model, max_length=EVAL_MAX_LENGTH), test, "SmolLM2 trained")
    show_example(test, before, after)
    search_this_repository()
    console.rule(f"done in {time.perf_counter() - started:.0f}s")
    console.print(
        "next (the cpt command is in .venv/bin: `source .venv/bin/activate` first):\n"
        f"  cpt eval -m {model} -m smollm2 --tasks cosqa,stsb   # the full benchmarks\n"
        f"  cpt search {RUNS / 'src.idx'} 'check that a port is free'  # ask your own question\n"
        "  cpt --help"
    )


if __name__ == "__main__":
    main()
