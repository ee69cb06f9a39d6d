"""`python -m cpt_embed.cli`: the `cpt` command (the server restarts itself this way)."""

import sys

from cpt_embed.cli import app

sys.exit(app())
