"""``charrnn serve``: the HTTP server (serve/server.py) over a checkpoint."""

import os

import click

from ..io.checkpoint import load_checkpoint, resolve_checkpoint
from ..serve.server import ServeConfig, make_server, serve_until_signal
from .errors import user_errors
from .options import CONTEXT_SETTINGS, FiniteFloatRange


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--host", default=ServeConfig.host, show_default=True,
              help="Address to listen on; 0.0.0.0 opens the model to anyone who can reach this machine.")
@click.option("--port", type=click.IntRange(0, 65535), default=ServeConfig.port, show_default=True,
              help="0: any free port (the address is printed).")
@click.option("--max-length", type=click.IntRange(min=1), default=ServeConfig.max_length, show_default=True,
              help="Most characters one request may generate.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=ServeConfig.max_concurrent,
              show_default=True,
              help="Requests served at once, each with its own copy of the model; more are answered 503.")
@click.option("--max-score-chars", type=click.IntRange(min=1), default=ServeConfig.max_score_chars,
              show_default=True, help="Most characters of text one /v1/score request may score (413 beyond).")
@click.option("--max-inspect-chars", type=click.IntRange(min=1), default=ServeConfig.max_inspect_chars,
              show_default=True,
              help="Most characters of text one /v1/inspect request may read (413 beyond): its answer holds about "
                   "100 bytes per character.")
@click.option("--max-connections", type=click.IntRange(min=1), default=ServeConfig.max_connections,
              show_default=True,
              help="Connections open at once (fewer if the open-file limit, ulimit -n, says so); beyond, the one "
                   "longest in sending its request is closed with a 503 to make room.")
@click.option("--request-timeout", type=FiniteFloatRange(0, 86400, min_open=True), default=ServeConfig.request_timeout,
              show_default=True, help="Seconds a client has to send its whole request, headers and body (408 after).")
@click.option("-q", "--quiet", is_flag=True, help="No access log on stderr.")
@click.pass_context
def serve(ctx, checkpoint, host, port, max_length, max_concurrent, max_score_chars, max_inspect_chars,
          max_connections, request_timeout, quiet):
    """Serve CHECKPOINT over HTTP: a page to play with at /, and a JSON API (docs/server.md).

    \b
    Example:
      charrnn serve checkpoints
      curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' -d '{"seed": "Romeo."}'
    """
    config = ServeConfig(host=host, port=port, max_length=max_length, max_concurrent=max_concurrent,
                         max_score_chars=max_score_chars, max_inspect_chars=max_inspect_chars,
                         max_connections=max_connections,
                         request_timeout=request_timeout, quiet=quiet)
    with user_errors():
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
        info = {"checkpoint": os.path.basename(path), "step": ckpt.meta.get("step")}  # its name, not where it lies
        try:
            server = make_server(ckpt.model, ckpt.vocab, config, info)
        except OSError as e:
            raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if server.server_name not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the model", err=True)
    if server.connections.cap < max_connections:
        click.echo(f"note: at most {server.connections.cap:,} connections at once, as the open-file limit "
                   "(ulimit -n) allows", err=True)
    click.echo(f"serving {path} at {server.url} (Ctrl-C stops)")
    ctx.exit(128 + serve_until_signal(server))
