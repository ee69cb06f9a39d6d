"""Where cpt-embed keeps what it can rebuild: converted models and cached embeddings."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CPT_CACHE"


def cache_root() -> Path:
    """$CPT_CACHE, else ~/.cache/cpt-embed."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cpt-embed")
