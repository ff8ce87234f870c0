"""``gbc view``: a local, read-only web page to browse, search and inspect graphs."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Optional

import click

from gbc.cli.common import handle_errors

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address exposes the graphs to the network (no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--images-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the images (default: the folders the store recorded, else the source's folder).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@handle_errors
def view(src: Path, host: str, port: int, images_root: Optional[Path], open_browser: bool):
    """Browse, search and inspect the graphs of SRC in a web page (read-only).

    SRC is a store, a folder of store shards or a graph file (.jsonl, .json, .parquet). The
    search index is built on first use, beside a store (SRC.view.sqlite) or in the user's cache
    folder, and rebuilt when the source changes. Stop with Ctrl-C.

    \b
    Example:
      gbc view run.lmdb --images-root images/ --open
    """
    try:
        import uvicorn

        from gbc.view.app import create_app
    except ImportError as exc:
        raise click.ClickException(f"gbc view needs the 'view' extra ({exc.name} is missing): pip install 'gbc[view]'") from None
    if images_root is not None and not images_root.is_dir():
        raise click.BadParameter(f"{images_root} is not a folder", param_hint="--images-root")
    hosts = None
    if not _is_loopback(host):
        click.echo(f"Warning: listening on {host}: anyone who can reach this address can read these graphs "
                   "(the viewer has no authentication). Prefer an SSH tunnel to 127.0.0.1.", err=True)
        hosts = ["*"]
    elif host not in LOOPBACK:
        hosts = sorted(LOOPBACK) + [host]  # another loopback address, e.g. 127.0.0.2
    sock = _listen(host, port)  # before the app: a port in use is one clear line, not a traceback
    try:
        app = create_app(src, images_root=images_root, allowed_hosts=hosts)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"

    async def announce():
        while not server.started:
            await asyncio.sleep(0.05)
        click.echo(f"gbc view: serving {src} at {url} (Ctrl-C to stop)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    async def run():
        task = asyncio.create_task(announce())
        await server.serve(sockets=[sock])
        task.cancel()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _listen(host: str, port: int):
    """A listening socket on ``host``:``port``; ``click.ClickException`` when that is not possible."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock
