"""The GPU check of the training engine and cpt-code, in stages that each go on when one
before them fails (benchmarks/gpu.sh runs it on the GPU machine):

1. join: the parts benchmarks/gpu_prepare.py cut (models, wheels, pairs, evaluation data)
   back into whole files, checked by sha256; wheels installed into a folder on PYTHONPATH.
2. table: benchmarks/train.py --gpu for every model (ours vs CachedMNRL, batch 4096).
3. train: experiments/plans/cpt-code.yaml with the Qwen start point and as many steps as
   the table's throughput allows in --train-minutes (with no table: --fallback-pps);
   experiments/reproduce.py trains, evaluates the start point and the trained model, and
   writes the report.
4. pack: what came out into OUT/results.tar.gz (the log is OUT/gpu.log).

    python benchmarks/gpu_run.py --stash /tmp/stash --out $OUT [--train-minutes 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def join(stash: Path, work: Path, site: Path) -> dict[str, Path]:
    """Whole files from the parts in `stash` (manifest.json tells which pieces, in order);
    wheels installed into `site`, tarballs unpacked beside them."""
    manifest = json.loads(next(stash.rglob("manifest.json")).read_text())
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for piece in manifest["pieces"]:
        target = work / piece["file"]
        source = next(stash.rglob(piece["piece"]))
        with (
            open(target, "ab" if target.name in files else "wb") as out,
            open(source, "rb") as part,
        ):
            shutil.copyfileobj(part, out)
        files[target.name] = target
    for name, digest in manifest["sha256"].items():
        if hashlib.sha256(files[name].read_bytes()).hexdigest() != digest:
            raise SystemExit(f"{name}: sha256 differs after joining; carry its parts again")
    wheels = [str(p) for p in files.values() if p.suffix == ".whl"]
    if wheels:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        subprocess.run([*pip, "--target", str(site), *wheels], check=True)
    for path in [p for p in files.values() if p.name.endswith(".tar.gz")]:
        with tarfile.open(path) as archive:
            archive.extractall(work, filter="data")
    return files


def stage(name: str, function, *args):
    """Run one stage; its failure is printed and the next stage goes on."""
    started = time.perf_counter()
    print(f"=== {name}", flush=True)
    try:
        result = function(*args)
        print(f"=== {name}: done in {time.perf_counter() - started:.0f}s", flush=True)
        return result
    except (Exception, SystemExit) as err:
        print(f"=== {name}: FAILED after {time.perf_counter() - started:.0f}s: {err!r}", flush=True)
        return None


def table(models: list[Path], pairs: Path, out: Path, steps: int, batch: int, device: str) -> dict:
    """benchmarks/train.py --gpu on these models; its raw result."""
    command = [sys.executable, str(HERE / "train.py"), "--gpu", "--batch", str(batch)]
    command += ["--max-length", "128", "--steps", str(steps), "--pairs", str(pairs)]
    command += [f"--model={m}" for m in models] + ["--device", device]
    subprocess.run([*command, "--json", str(out / "train-gpu.json")], check=True)
    return json.loads((out / "train-gpu.json").read_text())


def steps_for(result: dict | None, model: Path, seconds: float, batch: int, fallback: float) -> int:
    """Optimiser steps of `batch` pairs that fit `seconds` at the measured pairs/s (less a
    minute for loading, probing and tokenizing)."""
    rows = [r for r in (result or {}).get("rows", []) if r["loss"] == "ours"]
    measured = [r["pairs_per_s"] for r in rows if Path(r["model"]).name == model.name]
    rate = measured[0] if measured else fallback
    return max(2, int((seconds - 60) * rate / batch))


def train_and_evaluate(
    model: Path, steps: int, pairs: Path, data: Path, out: Path, work: Path, options: dict
) -> Path:
    """The cpt-code plan with this start point and step count (and `options` over its
    train settings and eval tasks), run by reproduce.py."""
    plan = yaml.safe_load((ROOT / "experiments" / "plans" / "cpt-code.yaml").read_text())
    for entry in [*plan["references"], *plan["runs"]]:
        entry["model"] = str(model)
    plan["runs"][0]["max_steps"] = steps
    plan["train"] |= options.get("train", {})
    plan["runs"][0] |= options.get("run", {})
    plan["eval"] |= options.get("eval", {})
    path = out / "cpt-code.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    run = work / "reproduce"
    for kind in ("code", "text"):  # mined on the CPU machine: reproduce reuses them
        target = run / "pairs" / kind
        if not target.exists():
            shutil.copytree(pairs / kind, target)
    command = [sys.executable, str(ROOT / "experiments" / "reproduce.py"), "--plan", str(path)]
    command += ["--out", str(run), "--docs", str(out / "docs"), "--data", str(data)]
    subprocess.run([*command, "--device", options.get("device", "cuda")], check=True)
    return run


def pack(out: Path, run: Path | None) -> None:
    """The outputs worth keeping in one archive (the device tool brings back few files)."""
    with tarfile.open(out / "results.tar.gz", "w:gz") as archive:
        for path in (out / "train-gpu.json", out / "cpt-code.yaml", out / "docs"):
            if path.exists():
                archive.add(path, arcname=path.name)
        if run is not None:
            for path in run.rglob("*"):
                if path.suffix in (".json", ".jsonl") and "checkpoints" not in path.parts:
                    archive.add(path, arcname=str(Path("run") / path.relative_to(run)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stash", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cpt-gpu"))
    parser.add_argument("--site", type=Path, default=Path("/tmp/site"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--model", type=Path, action="append", help="table models (default: the GGUFs)"
    )
    parser.add_argument(
        "--coder", type=Path, help="start point of cpt-code (default: the Qwen GGUF)"
    )
    parser.add_argument("--train-minutes", type=float, default=4.0, help="at most")
    parser.add_argument(
        "--budget", type=float, default=0, help="seconds for everything (0: no limit)"
    )
    parser.add_argument("--eval-seconds", type=float, default=150, help="kept for eval + pack")
    parser.add_argument("--table-steps", type=int, default=2)
    parser.add_argument("--table-batch", type=int, default=4096)
    parser.add_argument("--fallback-pps", type=float, default=500.0)
    parser.add_argument("--plan-options", type=json.loads, default={}, help="JSON over the plan")
    parser.add_argument("--skip", nargs="*", default=[], choices=["table", "train"])
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    files = stage("join", join, args.stash, args.work, args.site) or {}
    ggufs = sorted(p for p in files.values() if p.suffix == ".gguf")
    models = args.model or ggufs
    coder = args.coder or next((m for m in ggufs if "coder" in m.name), None)
    pairs, data = args.work / "pairs", args.work / "data"
    result = None
    if "table" not in args.skip:
        table_args = (models, pairs / "code", args.out, args.table_steps, args.table_batch)
        result = stage("table", table, *table_args, args.device)
    run = None
    if coder is not None and "train" not in args.skip:
        batch = args.plan_options.get("run", {}).get("batch_size", 2048)
        seconds = args.train_minutes * 60
        if args.budget:  # what the table left, less what evaluating and packing need
            left = args.budget - (time.perf_counter() - started) - args.eval_seconds
            seconds = min(seconds, left)
        steps = steps_for(result, coder, seconds, batch, args.fallback_pps)
        print(f"training {coder.name} for {steps} steps of {batch} pairs", flush=True)
        options = {**args.plan_options, "device": args.device}
        run = stage(
            "train", train_and_evaluate, coder, steps, pairs, data, args.out, args.work, options
        )
    stage("pack", pack, args.out, run)


if __name__ == "__main__":
    main()
