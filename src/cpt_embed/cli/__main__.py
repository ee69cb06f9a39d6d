"""`python -m cpt_embed.cli`: the `cpt` command (the server restarts itself this way)."""

from cpt_embed.cli import app

app()
