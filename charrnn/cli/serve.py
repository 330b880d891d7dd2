"""``charrnn serve``: the HTTP server (serve/server.py) over a checkpoint."""

import click

from ..io.checkpoint import load_checkpoint, resolve_checkpoint
from ..serve.server import ServeConfig, make_server, serve_until_signal
from .errors import user_errors
from .options import CONTEXT_SETTINGS


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
@click.option("-q", "--quiet", is_flag=True, help="No access log on stderr.")
@click.pass_context
def serve(ctx, checkpoint, host, port, max_length, max_concurrent, quiet):
    """Serve CHECKPOINT over HTTP: a page to play with at /, and a JSON API (docs/server.md).

    \b
    Example:
      charrnn serve checkpoints
      curl -s localhost:8000/v1/generate -H 'Content-Type: application/json' -d '{"seed": "ROMEO."}'
    """
    config = ServeConfig(host=host, port=port, max_length=max_length, max_concurrent=max_concurrent, quiet=quiet)
    with user_errors():
        path = resolve_checkpoint(checkpoint)
        ckpt = load_checkpoint(path)
        try:
            server = make_server(ckpt.model, ckpt.vocab, config, {"checkpoint": path, "step": ckpt.meta.get("step")})
        except OSError as e:
            raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if server.server_name not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine can use the model", err=True)
    click.echo(f"serving {path} at {server.url} (Ctrl-C stops)")
    ctx.exit(128 + serve_until_signal(server))
