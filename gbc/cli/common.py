"""Shared pieces of the CLI: turning expected errors into clear messages, progress bars."""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable, Tuple, Type

import click

from gbc.errors import GbcError

#: Exceptions that describe bad input rather than a bug (every ``GbcError``, and the built-in
#: ones that file and value problems raise); they become a one-line message and
#: exit code 1 (or 2 for usage errors) instead of a traceback. Modules may extend this tuple
#: through ``register_user_error``.
_USER_ERRORS: Tuple[Type[BaseException], ...] = (GbcError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)


def register_user_error(exc_type: Type[BaseException]) -> None:
    global _USER_ERRORS
    if exc_type not in _USER_ERRORS:
        _USER_ERRORS = _USER_ERRORS + (exc_type,)


def handle_errors(func: Callable) -> Callable:
    """Decorator for command callbacks: expected errors print ``Error: ...`` and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except _USER_ERRORS as exc:
            raise click.ClickException(str(exc) or exc.__class__.__name__) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if exc.filename:
                from gbc.store.health import mount_point

                message = f"no space left on {mount_point(exc.filename)} (writing {exc.filename})"
            else:
                message = "no space left on device"
            raise click.ClickException(message) from None

    return wrapper


def plural(n: int, noun: str) -> str:
    """``"1 graph"``, ``"3 graphs"``: a count and its noun, for the one-line summaries."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def one_line(text) -> str:
    """Any text (a reason, a caption, an error) squeezed onto one line for tabular output."""
    return " ".join(str(text).split())


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", disable=None):
    """A tqdm progress bar on stderr, hidden when stderr is not a terminal unless forced."""
    from tqdm import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)


def report_damaged(damaged, what: str) -> None:
    """List every damaged graph on stderr, then fail the command (its output covers the rest)."""
    for key, message in damaged:
        click.echo(f"damaged: {message}", err=True)
    raise click.ClickException(f"{len(damaged)} damaged graph(s) {what} (gbc salvage copies the readable ones to a new store)")
