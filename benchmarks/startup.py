"""Start-up of the `cpt` command, against importing sentence-transformers, in one run.

    python benchmarks/startup.py [--repeats 5] [--lines 20] [--busy 1]

Times in fresh processes: `cpt --help`; an error (`cpt embed` of a missing file); `cpt embed`
of a file of `--lines` short texts into a .npy with the default model; and, as the peer
reference, `python -c "import sentence_transformers"`, which loads torch and transformers as
any embedding command must. Also the model's load alone, timed inside a fresh process once
torch is imported: `Encoder.load("default")` against sentence-transformers loading the same
folder. Every command runs once per round, the rounds interleaved, so
that a machine busy with other work slows them alike; the table gives the best and the
median of `--repeats` rounds and each best's ratio to the peer's. The embed runs share a
fresh $CPT_CACHE: the first fills it and is reported apart ("first run"). `--busy N` keeps N
processes multiplying matrices with torch meanwhile (each on torch's default threads), as
other work on a shared machine holds the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# seconds of wall time (issues 24, 26)
TARGETS = {"cpt --help": 0.3, "cpt embed": 3.0, "Encoder.load": 1.0}
PEER = "import sentence_transformers"
BUSY = "import torch\nx = torch.randn(256, 256)\nwhile True:\n    x @ x"
SENTENCE = "the quick brown fox jumps over the lazy dog by the river at dawn"
# The model's load in a fresh process after `import torch`: (set-up, the timed code), whose
# seconds the process prints. Both load transformers on the way.
LOADS = {
    "Encoder.load": ("from cpt_embed.model import Encoder", "Encoder.load('default')"),
    "SentenceTransformer(the same folder)": (
        "from cpt_embed.model.resolve import resolve_model\nfolder = str(resolve_model('default'))",
        "from sentence_transformers import SentenceTransformer\n"
        "SentenceTransformer(folder, device='cpu')",
    ),
}


def cpt_command() -> list[str]:
    """The `cpt` entry point next to this interpreter, else `python -m cpt_embed.cli`."""
    found = shutil.which("cpt", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "cpt_embed.cli"]


def timed(argv: list[str], env: dict[str, str], expect: int) -> float:
    """Wall seconds of one run of `argv`; its exit code must be `expect`."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def commands(folder: Path, lines: int) -> dict[str, tuple[list[str], int]]:
    """Each timed command by name: its argv and the exit code it must end with."""
    texts = folder / "texts.txt"
    sentences = (f"{i}: {SENTENCE[: 20 + 3 * i]}" for i in range(lines))
    texts.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    cpt = cpt_command()
    return {
        "cpt --help": ([*cpt, "--help"], 0),
        "cpt embed --help": ([*cpt, "embed", "--help"], 0),
        "error: missing input": (
            [*cpt, "embed", str(folder / "missing.txt"), "-o", str(folder / "m.npy")],
            2,
        ),
        "error: unknown eval task": ([*cpt, "eval", "--tasks", "nosuch"], 2),
        "error: missing training pairs": (
            [*cpt, "train", "--data", str(folder / "missing.jsonl"), "-o", str(folder / "run")],
            2,
        ),
        "error: missing index (serve)": ([*cpt, "serve", "--index", str(folder / "no.idx")], 2),
        "cpt embed": ([*cpt, "embed", str(texts), "-o", str(folder / "v.npy")], 0),
        PEER: ([sys.executable, "-c", PEER], 0),
    }


def load_seconds(setup: str, code: str, env: dict[str, str]) -> float:
    """Seconds `code` takes in a fresh process once torch is imported and `setup` ran."""
    script = "\n".join(
        [
            "import os, time, torch",
            setup,
            "t = time.perf_counter()",
            code,
            "print(time.perf_counter() - t, flush=True)",
            "os._exit(0)",
        ]
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{code} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


@contextlib.contextmanager
def busy(processes: int):
    """`processes` processes busy with torch matrix products meanwhile."""
    spinning = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in spinning:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--busy", type=int, default=0, help="processes busy meanwhile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, busy(args.busy):
        folder = Path(tmp)
        env = dict(os.environ, CPT_CACHE=str(folder / "cache"))
        runs = commands(folder, args.lines)
        argv, expect = runs["cpt embed"]
        first = timed(argv, env, expect)
        seconds: dict[str, list[float]] = {name: [] for name in [*runs, *LOADS]}
        for _ in range(args.repeats):
            for name, (argv, expect) in runs.items():
                seconds[name].append(timed(argv, env, expect))
            for name, (setup, code) in LOADS.items():
                seconds[name].append(load_seconds(setup, code, env))
    peer = min(seconds[PEER])
    print(
        f"{os.cpu_count()} CPUs, {args.busy} busy processes, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print("| command | best s | median s | best / peer's | target |")
    print("|---|---:|---:|---:|---:|")
    for name, values in seconds.items():
        target = f"<= {TARGETS[name]} s" if name in TARGETS else ""
        best, median = min(values), statistics.median(values)
        ratio = f"{best / peer:.2f}x" if name in runs else ""
        print(f"| `{name}` | {best:.2f} | {median:.2f} | {ratio} | {target} |")
    print(f"| `cpt embed`, first run (empty $CPT_CACHE) | {first:.2f} | | {first / peer:.2f}x | |")
    load, st_load = (min(seconds[name]) for name in LOADS)
    print(f"\nthe model's load after `import torch`: {load / st_load:.2f}x sentence-transformers'")


if __name__ == "__main__":
    main()
