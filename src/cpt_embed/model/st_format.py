"""Reading and writing sentence-transformers model folders (modules.json + module configs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpt_embed.errors import InputError
from cpt_embed.model.config import EncoderConfig

MODULES_NAME = "modules.json"
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
# sentence-transformers pooling modes we compute exactly, and their names there.
_FROM_ST_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "eos"}
_TO_ST_POOLING = {v: k for k, v in _FROM_ST_POOLING.items()}


def is_sentence_transformers_folder(folder: Path) -> bool:
    """True if `folder` holds a sentence-transformers model (it has modules.json)."""
    return (folder / MODULES_NAME).is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read sentence-transformers config ({err})") from err


def _pooling_mode(config: dict[str, Any], path: Path) -> str:
    mode = config.get("pooling_mode")
    if mode is None:
        flags = [
            k[len("pooling_mode_") :]
            for k, v in config.items()
            if k.startswith("pooling_mode_") and v
        ]
        if len(flags) != 1:
            raise InputError(f"{path}: expected exactly one pooling mode, found {flags or 'none'}")
        mode = flags[0].removesuffix("_token").removesuffix("_tokens")
    if mode not in _FROM_ST_POOLING:
        raise InputError(
            f"{path}: pooling mode {mode!r} is not supported; cpt-embed pools by "
            f"{sorted(_FROM_ST_POOLING)}"
        )
    if config.get("include_prompt", True) is False:
        raise InputError(f"{path}: include_prompt=false is not supported")
    return _FROM_ST_POOLING[mode]


def read_sentence_transformers(folder: Path) -> tuple[Path, EncoderConfig]:
    """The backbone folder and the equivalent EncoderConfig of a sentence-transformers model."""
    modules = _read_json(folder / MODULES_NAME)
    backbone_dir, pooling, normalize = None, None, False
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind == _TRANSFORMER and backbone_dir is None:
            backbone_dir = path
        elif kind == _POOLING and pooling is None:
            pooling = _pooling_mode(_read_json(path / "config.json"), path / "config.json")
        elif kind == _NORMALIZE:
            normalize = True
        else:
            raise InputError(
                f"{folder / MODULES_NAME}: module {module.get('type')!r} is not supported; "
                "cpt-embed loads Transformer + Pooling (+ Normalize) models"
            )
    if backbone_dir is None or pooling is None:
        raise InputError(f"{folder / MODULES_NAME}: needs a Transformer and a Pooling module")

    max_length = 512
    for candidate in (
        backbone_dir / "sentence_bert_config.json",
        folder / "sentence_bert_config.json",
    ):
        if candidate.is_file():
            st_config = _read_json(candidate)
            if st_config.get("do_lower_case"):
                raise InputError(f"{candidate}: do_lower_case=true is not supported")
            max_length = int(st_config.get("max_seq_length") or max_length)
            break

    prompts: dict[str, str] = {}
    extra = folder / "config_sentence_transformers.json"
    if extra.is_file():
        prompts = _read_json(extra).get("prompts") or {}
    document_prompt = next(
        (prompts[k] for k in ("document", "passage", "corpus") if k in prompts), ""
    )
    config = EncoderConfig(
        pooling=pooling,  # type: ignore[arg-type]
        delimiters={"query": (prompts.get("query", ""), ""), "document": (document_prompt, "")},
        max_length=max_length,
        normalize=normalize,
    )
    return backbone_dir, config


def sentence_transformers_problem(config: EncoderConfig) -> str | None:
    """Why sentence-transformers cannot reproduce this config exactly, or None if it can."""
    if config.pooling not in _TO_ST_POOLING:
        return f"pooling {config.pooling!r} has no sentence-transformers equivalent"
    suffixes = {side: pair[1] for side, pair in config.delimiters.items() if pair[1]}
    if suffixes:
        return f"closing delimiters {suffixes} cannot be expressed as sentence-transformers prompts"
    if config.padding_side == "left":
        return "left padding is not expressed in the sentence-transformers files"
    return None


def write_sentence_transformers(folder: Path, config: EncoderConfig, dim: int) -> None:
    """Write the module files that make `folder` (backbone + tokenizer at its root) a
    sentence-transformers model computing the same embeddings."""
    problem = sentence_transformers_problem(config)
    if problem:
        raise InputError(f"cannot export as sentence-transformers: {problem}")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if config.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    mode = _TO_ST_POOLING[config.pooling]
    pooling = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_lasttoken": mode == "lasttoken",
        "include_prompt": True,
    }
    prompts = {side: pair[0] for side, pair in config.delimiters.items() if pair[0]}
    files = {
        MODULES_NAME: modules,
        "1_Pooling/config.json": pooling,
        "sentence_bert_config.json": {"max_seq_length": config.max_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": prompts,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
