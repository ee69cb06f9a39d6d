"""`cpt serve`: the HTTP API and search page around one model (and optionally an index)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cpt_embed.cli.common import DeviceOption, ModelOption, quiet_transformers, say, user_errors


@user_errors
def serve(
    model: ModelOption = "default",
    index: Annotated[
        Path | None, typer.Option(help="Index folder to serve /v1/search and the page from.")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CPT_API_KEY",
            help="Require `Authorization: Bearer KEY` on /v1/* (or set $CPT_API_KEY).",
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens per micro-batch of concurrent requests.")
    ] = 16_384,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a filling micro-batch waits for a request.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Texts waiting at most; beyond that requests get 503.")
    ] = 4096,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body in MiB; beyond: 413.")
    ] = 8.0,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may take; beyond: 503.")
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections at most; beyond: 503.")
    ] = 1024,
    header_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds a connection may take to send a request's headers."),
    ] = 10.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A web origin whose pages may call the API (repeat for more; default: none)."
        ),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Serve the model over HTTP: OpenAI-compatible POST /v1/embeddings, POST /v1/search,
    GET /health, GET /metrics, and a search page at /."""
    from cpt_embed.model.resolve import resolve_model
    from cpt_embed.serve.process import check_port, restart_with_server_env

    check_port(host, port)
    resolve_model(model)  # a wrong name or path fails before the restart and torch
    if index is not None:
        from cpt_embed.search.store import read_manifest

        read_manifest(index)
    restart_with_server_env([sys.executable, "-m", "cpt_embed.cli", *sys.argv[1:]])
    import uvicorn

    from cpt_embed.model import Encoder
    from cpt_embed.serve.app import create_app
    from cpt_embed.serve.http import ServerConfig

    quiet_transformers()
    encoder = Encoder.load(model, device=device)
    searcher = None
    if index is not None:
        from cpt_embed.search.query import Searcher

        searcher = Searcher(index, encoder, model)
    app_ = create_app(
        encoder,
        model,
        searcher=searcher,
        api_key=api_key,
        max_batch_tokens=max_batch_tokens,
        max_wait=max_wait_ms / 1000,
        max_queue=max_queue,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        timeout=timeout,
        cors_origins=cors_origin or (),
    )
    say(f"serving {model} on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)")
    config = ServerConfig(
        app_,
        host=host,
        port=port,
        log_level="warning",
        max_connections=max_connections,
        header_timeout=header_timeout,
    )
    uvicorn.Server(config).run()
