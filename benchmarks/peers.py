"""The encode benchmark's peers that need a Python environment of their own.

sentence-transformers' ONNX and OpenVINO backends need optimum and optimum-intel, which pin
transformers < 4.58, and fastembed brings its own ONNX Runtime and tokenizer pipeline. The
three share one venv, created on first use under $CPT_CACHE/bench (about 2 minutes and
2 GB): pip resolves them together in under a minute, to the same versions it picks for the
ONNX backend alone. Each backend runs in a worker process of its own started from that
venv (`python peers.py --worker BACKEND ...`), so one runtime's threads never wait beside
another's. The protocol: the worker's first stdout line is JSON {versions, settings, notes};
then one JSON request line on its stdin ({names, threads, runs}, the texts in WORK/texts.json)
gets one JSON line of seconds per setting back, the embeddings as WORK/NAME.npy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# The CPU build that lies on this machine's disk; any other torch spec pulls a CUDA build.
VENV_TORCH = "torch==2.13.0"
VENV_REQUIREMENTS = (
    # sentence-transformers 6 needs a transformers that optimum refuses: pip then backtracks
    # for many minutes; the 5 series installs at once (5.7 measured here).
    "sentence-transformers[onnx,openvino]>=5.0,<6",
    "fastembed>=0.7",
    # For the OpenVINO int8 calibration set. Later releases send pip backtracking for more
    # than 8 minutes against the transformers that optimum allows.
    "datasets>=3,<4.1",
)
BACKENDS = ("onnx", "openvino", "fastembed")
WARM_UP_TEXTS = 32
# sentence-transformers' ONNX settings: name -> file inside the exported model folder.
ONNX_FILES = {
    "ST ONNX": "onnx/model.onnx",
    "ST ONNX O3": "onnx/model_O3.onnx",
    "ST ONNX qint8": "onnx/model_qint8_avx512_vnni.onnx",
}
OPENVINO_FILES = {
    "ST OpenVINO": "openvino/openvino_model.xml",
    "ST OpenVINO int8": "openvino/openvino_model_qint8_quantized.xml",
}
FASTEMBED = "fastembed"
INT8_FAILED = "int8-failed.txt"

Encode = Callable[[list[str]], np.ndarray]
# name -> (threads -> encode function)
Loaders = dict[str, Callable[[int], Encode]]


# Every setting is timed on a settled machine: the setting before it ran in another process
# to the last moment, and cpt-embed's thread governor would count that work as another
# program's for its first 0.15 s window (src/cpt_embed/model/runtime/threads.py).
SETTLE_S = 0.5


def timed(encode: Encode, texts: list[str], runs: int) -> tuple[list[float], np.ndarray]:
    """Seconds of `runs` calls after a warm-up call on a few texts and a pause of SETTLE_S,
    and the output; the one timing routine of the benchmark's own process and of the
    workers."""
    encode(texts[:WARM_UP_TEXTS])
    time.sleep(SETTLE_S)
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = encode(texts)
        times.append(time.perf_counter() - start)
    return times, out


def bench_venv(name: str, torch_spec: str, requirements: tuple[str, ...], what: str) -> Path:
    """The python of the venv `name` for a peer whose pins must stay out of the project's
    environment, created on first use and again whenever its requirements change (they are
    recorded in the venv's .installed); torch's CPU build first, then the rest pinned to it."""
    from cpt_embed.paths import cache_root

    venv = cache_root() / "bench" / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join([torch_spec, *requirements]) + "\n"
    if not marker.exists() or marker.read_text(encoding="utf-8") != wanted:
        print(f"creating {venv} for {what}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, torch_spec], check=True)  # the CPU build first
        subprocess.run([*pip, *requirements, torch_spec], check=True)
        marker.write_text(wanted, encoding="utf-8")
    return python


def peer_python() -> Path:
    """The python of the ONNX, OpenVINO and fastembed peers' venv (optimum pins
    transformers < 4.58)."""
    return bench_venv(
        "peers-venv",
        VENV_TORCH,
        VENV_REQUIREMENTS,
        "the ONNX, OpenVINO and fastembed peers (once: about 2 minutes, 2 GB; optimum pins "
        "transformers < 4.58, so they get their own venv)",
    )


class VenvPeer:
    """One backend's settings, timed by `worker` in the peers' venv (protocol: module
    docstring). `calibration`: texts for int8 calibration, for the backends that need it."""

    def __init__(self, backend: str, source: str, calibration: list[str] | None = None) -> None:
        from cpt_embed.paths import cache_root

        self.work = Path(tempfile.mkdtemp(prefix=f"cpt-bench-{backend}-"))
        (self.work / "calibration.json").write_text(json.dumps(calibration or []), "utf-8")
        cache = cache_root() / "bench"
        command = [str(peer_python()), __file__, "--worker", backend, source, str(cache)]
        env = {
            **os.environ,
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
        self.process = subprocess.Popen(
            [*command, str(self.work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        try:
            hello = self._reply(backend)
        except BaseException:
            self.process.kill()
            shutil.rmtree(self.work, ignore_errors=True)
            raise
        self.backend = backend
        self.versions: dict[str, str] = hello["versions"]
        self.settings: list[str] = hello["settings"]
        self.notes: list[str] = hello["notes"]

    def _reply(self, backend: str) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {backend} worker stopped; its errors are above")
        return json.loads(line)

    def measure(
        self, names: list[str], texts: list[str], threads: int, runs: int
    ) -> dict[str, tuple[list[float], np.ndarray]]:
        """`timed` for this peer's settings `names`."""
        (self.work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        request = {"names": names, "threads": threads, "runs": runs}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        times = self._reply(self.backend)
        return {name: (times[name], np.load(self.work / f"{name}.npy")) for name in names}

    def __enter__(self) -> VenvPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.work, ignore_errors=True)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the distributions `names`."""
    from importlib.metadata import version

    return {name: version(name) for name in names}


def exported(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(folder)` into a side folder and renamed when absent, so an
    interrupted export never leaves a half folder behind."""
    if not target.exists():
        print(f"exporting to {target} (once)", file=sys.stderr, flush=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build(partial)
        partial.rename(target)
    return target


def onnx_export(source: str, cache: Path) -> Path:
    """sentence-transformers' ONNX export of `source`: plain, O3 and int8 (AVX-512 VNNI)."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    def build(folder: Path) -> None:
        model = SentenceTransformer(source, backend="onnx", device="cpu")
        model.save(str(folder))
        export_optimized_onnx_model(model, "O3", str(folder))
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(folder))

    return exported(cache / "all-MiniLM-L6-v2-onnx", build)


def onnx_setup(source: str, cache: Path, work: Path) -> tuple[dict, Loaders, list[str]]:
    """sentence-transformers' ONNX backend: versions, loaders of its settings, notes."""
    import onnxruntime
    from sentence_transformers import SentenceTransformer

    folder = onnx_export(source, cache)

    def loader(name: str) -> Callable[[int], Encode]:
        def load(threads: int) -> Encode:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            kwargs = {"file_name": ONNX_FILES[name], "session_options": options}
            kwargs["provider"] = "CPUExecutionProvider"
            model = SentenceTransformer(
                str(folder), backend="onnx", device="cpu", model_kwargs=kwargs
            )
            return model.encode

        return load

    versions = package_versions("sentence-transformers", "onnxruntime")
    return versions, {name: loader(name) for name in ONNX_FILES}, []


def openvino_export(source: str, cache: Path, calibration: list[str]) -> Path:
    """sentence-transformers' OpenVINO export of `source`, and its static int8 quantisation
    (export_static_quantized_openvino_model) calibrated on `calibration` as a local dataset
    folder; when that fails the reason goes into INT8_FAILED instead."""
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

    def build(folder: Path) -> None:
        model = SentenceTransformer(source, backend="openvino", device="cpu")
        model.save(str(folder))
        data = folder / "calibration"
        data.mkdir()
        with open(data / "train.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"sentence": s}) + "\n" for s in calibration)
        try:
            export_static_quantized_openvino_model(
                model,
                OVQuantizationConfig(),
                str(folder),
                dataset_name=str(data),
                dataset_config_name="default",
                dataset_split="train",
                column_name="sentence",
            )
        except Exception as error:  # any failure is reported, not fatal
            (folder / INT8_FAILED).write_text(f"{type(error).__name__}: {error}", "utf-8")
        shutil.rmtree(data)

    return exported(cache / "all-MiniLM-L6-v2-openvino", build)


def openvino_setup(source: str, cache: Path, work: Path) -> tuple[dict, Loaders, list[str]]:
    """sentence-transformers' OpenVINO backend at OpenVINO's defaults, and int8 where it
    exported; the notes say which inference precision each compiled to."""
    from sentence_transformers import SentenceTransformer

    calibration = json.loads((work / "calibration.json").read_text(encoding="utf-8"))
    folder = openvino_export(source, cache, calibration)

    def loader(name: str) -> Callable[[int], Encode]:
        def load(threads: int) -> Encode:
            config = {"INFERENCE_NUM_THREADS": threads}
            kwargs = {"file_name": OPENVINO_FILES[name], "ov_config": config}
            return SentenceTransformer(
                str(folder), backend="openvino", device="cpu", model_kwargs=kwargs
            ).encode

        return load

    names = [n for n in OPENVINO_FILES if (folder / OPENVINO_FILES[n]).exists()]
    precisions = []
    for name in names:
        kwargs = {"file_name": OPENVINO_FILES[name]}
        probe = SentenceTransformer(str(folder), backend="openvino", model_kwargs=kwargs)
        hint = probe.transformers_model.request.get_property("INFERENCE_PRECISION_HINT")
        quantised = " (int8 in its quantised layers)" if name.endswith("int8") else ""
        precisions.append(f"{name} {hint.get_type_name()}{quantised}")
    notes = ["OpenVINO's inference precision hint (its default here): " + ", ".join(precisions)]
    if (folder / INT8_FAILED).exists():
        failure = (folder / INT8_FAILED).read_text(encoding="utf-8")
        notes.append(f"ST OpenVINO int8 did not export offline ({failure})")
    versions = package_versions("sentence-transformers", "openvino", "optimum-intel")
    return versions, {name: loader(name) for name in names}, notes


def fastembed_setup(source: str, cache: Path, work: Path) -> tuple[dict, Loaders, list[str]]:
    """fastembed (ONNX Runtime) on sentence-transformers' plain ONNX export, registered as a
    custom model with all-MiniLM-L6-v2's mean pooling and normalisation. fastembed truncates
    at the smaller of the tokenizer_config's model_max_length and max_length (128 in the
    export), so its folder gets both set to ST's max_seq_length (the other files are links
    into the ONNX export)."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType
    from sentence_transformers import SentenceTransformer

    onnx = onnx_export(source, cache)

    def build(folder: Path) -> None:
        folder.mkdir()
        for item in onnx.iterdir():
            if item.name != "tokenizer_config.json":
                (folder / item.name).symlink_to(item)
        config = json.loads((onnx / "tokenizer_config.json").read_text(encoding="utf-8"))
        kwargs = {"file_name": ONNX_FILES["ST ONNX"]}
        model = SentenceTransformer(str(onnx), backend="onnx", device="cpu", model_kwargs=kwargs)
        length = model.max_seq_length
        config["model_max_length"] = config["max_length"] = length
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")

    folder = exported(cache / "all-MiniLM-L6-v2-fastembed", build)
    name = "local/all-MiniLM-L6-v2"
    TextEmbedding.add_custom_model(
        name,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=name),
        dim=384,
        model_file="onnx/model.onnx",
    )

    def load(threads: int) -> Encode:
        model = TextEmbedding(name, threads=threads, specific_model_path=str(folder))
        return lambda texts: np.stack(list(model.embed(texts)))

    return package_versions("fastembed"), {FASTEMBED: load}, []


def worker(backend: str, source: str, cache: str, work: str) -> None:
    """Runs in the peers' venv: sets `backend` up, then answers VenvPeer's requests."""
    import torch

    setup = {"onnx": onnx_setup, "openvino": openvino_setup, "fastembed": fastembed_setup}
    reply, sys.stdout = sys.stdout, sys.stderr  # libraries print; stdout carries replies only
    folder = Path(work)
    versions, loaders, notes = setup[backend](source, Path(cache), folder)
    hello = {"versions": versions, "settings": list(loaders), "notes": notes}
    print(json.dumps(hello), file=reply, flush=True)
    models: dict[tuple[str, int], Encode] = {}
    for line in sys.stdin:
        request = json.loads(line)
        threads = request["threads"]
        torch.set_num_threads(threads)  # sentence-transformers pools and normalises in torch
        texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
        times = {}
        for name in request["names"]:
            if (name, threads) not in models:
                models[name, threads] = loaders[name](threads)
            times[name], vectors = timed(models[name, threads], texts, request["runs"])
            np.save(folder / f"{name}.npy", vectors)
        print(json.dumps(times), file=reply, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 6 or sys.argv[2] not in BACKENDS:
        sys.exit("usage: peers.py --worker {onnx,openvino,fastembed} SOURCE CACHE WORK")
    worker(*sys.argv[2:])
