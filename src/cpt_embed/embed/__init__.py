"""Corpora -> vectors: one file into a .npy or .parquet file, or many shards into a folder
of Parquet files (resumable), in this process or on a Ray cluster."""

from cpt_embed.embed.corpus import (
    EmbedRun,
    EmbedSettings,
    embed_corpus,
    embed_file,
    embed_shards,
    is_shard_folder,
)

__all__ = [
    "EmbedRun",
    "EmbedSettings",
    "embed_corpus",
    "embed_file",
    "embed_shards",
    "is_shard_folder",
]
