"""Fuzzing GGUF start points with generated files: random architectures, sizes, metadata and
tensor tables, then bytes changed or cut off. `gguf_folder` converts the file or raises
GgufError, without running out of memory on sizes the file does not hold; a damaged cache
manifest is converted again. The quick tests run in `make test`; the `slow` one
(FUZZ_EXAMPLES / 10, env CPT_FUZZ_EXAMPLES) in `make test-all`."""

from __future__ import annotations

import json
import os
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpt_embed.model import gguf

pytest.importorskip("gguf")

FUZZ_EXAMPLES = int(os.environ.get("CPT_FUZZ_EXAMPLES", "4000"))
_COMMON = {"deadline": None, "database": None, "suppress_health_check": list(HealthCheck)}
QUICK = settings(max_examples=20, **_COMMON)
SLOW = settings(max_examples=FUZZ_EXAMPLES // 10, **_COMMON)
# More address space than this test needs, far less than the 6.5-billion-parameter model
# transformers would build for a file without sizes: that fails here, not the machine.
HEADROOM = 6 << 30

SIZE_KEYS = [
    "block_count",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "context_length",
]


@pytest.fixture(scope="module", autouse=True)
def guarded() -> Iterator[None]:
    """A fresh model cache, and an address space limit while these tests run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize"))
    limit = used + HEADROOM if hard == resource.RLIM_INFINITY else min(hard, used + HEADROOM)
    previous = os.environ.get("CPT_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CPT_CACHE"] = cache
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            if previous is None:
                del os.environ["CPT_CACHE"]
            else:
                os.environ["CPT_CACHE"] = previous


@st.composite
def gguf_files(draw) -> bytes:
    """A GGUF file written by the gguf package: a whole one-layer Llama, or an architecture
    with some of its size keys (tiny, zero or huge), maybe a vocabulary and some tensors;
    then maybe damaged."""
    from gguf import GGUFWriter

    whole = draw(st.booleans())
    arch = "llama" if whole else draw(st.sampled_from(["llama", "qwen2", "gpt2", "unknown"]))
    d, vocab = draw(st.sampled_from([2, 4, 8])), draw(st.integers(3, 8))
    sizes = {"block_count": 1, "embedding_length": d, "feed_forward_length": 2 * d}
    sizes |= {"attention.head_count": 1, "attention.head_count_kv": 1, "context_length": 16}
    shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,)}
    shapes |= {f"blk.0.{n}.weight": (d,) for n in ("attn_norm", "ffn_norm")}
    shapes |= {f"blk.0.attn_{n}.weight": (d, d) for n in ("q", "k", "v", "output")}
    shapes |= {f"blk.0.ffn_{n}.weight": (2 * d, d) for n in ("gate", "up")}
    shapes["blk.0.ffn_down.weight"] = (d, 2 * d)
    tensors = sorted(shapes)
    if not whole:
        for key in draw(st.lists(st.sampled_from(SIZE_KEYS), unique=True)):
            sizes.pop(key)  # a missing size: transformers takes its default
        for key in sizes:
            sizes[key] = draw(st.sampled_from([sizes[key], 0, 3, 1 << 20, (1 << 32) - 1]))
        tensors = draw(st.lists(st.sampled_from(tensors), unique=True))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.gguf"
        writer = GGUFWriter(path, arch)
        for key, value in sizes.items():
            writer.add_uint32(f"{arch}.{key}", value)
        if whole or draw(st.booleans()):
            writer.add_tokenizer_model("llama")
            writer.add_token_list(["<unk>", "<s>", "</s>", *"abcdefgh"[: vocab - 3]])
            writer.add_token_scores([0.0] * vocab)
            writer.add_token_types([2, 3, 3, *[1] * (vocab - 3)])
        for name in tensors:
            dtype = draw(st.sampled_from([np.float32, np.float16]))
            writer.add_tensor(name, np.ones(shapes[name], dtype=dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        data = bytearray(path.read_bytes())
    for _ in range(draw(st.integers(0, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _check_gguf_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.gguf"
        path.write_bytes(data)
        try:
            converted = gguf.gguf_folder(path)
        except gguf.GgufError as err:
            assert str(path) in str(err)
            assert "allocate memory" not in str(err)  # refused before building the model
            return
        manifest = json.loads((converted / gguf.MANIFEST).read_text(encoding="utf-8"))
        assert manifest["source_sha256"] == gguf.sha256_of(path)
        assert gguf.gguf_folder(path) == converted


@QUICK
@given(data=gguf_files())
def test_gguf_files_convert_or_raise_gguf_error(data):
    _check_gguf_file(data)


@QUICK
@given(data=st.binary(max_size=64).map(lambda tail: b"GGUF" + tail))
def test_nonsense_after_the_magic_raises_gguf_error(data):
    _check_gguf_file(data)


@pytest.mark.slow
@SLOW
@given(data=gguf_files())
def test_fuzz_gguf_files(data):
    _check_gguf_file(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@QUICK
@given(
    manifest=st.one_of(
        json_values.map(json.dumps),
        st.fixed_dictionaries({"source_sha256": st.just("SOURCE"), "weights": json_values}).map(
            json.dumps
        ),
        st.text(max_size=20),
    )
)
def test_a_damaged_cache_manifest_means_convert_again(manifest):
    """A manifest that is not what gguf_folder wrote is no intact conversion."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / gguf.MANIFEST).write_text(manifest, encoding="utf-8")
        assert gguf._intact(Path(folder), "SOURCE") is False
