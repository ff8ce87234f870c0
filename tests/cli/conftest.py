"""Helpers shared by the CLI tests, as fixtures: running ``gbc`` in this process or as a child
process, checking a one-line error, reading a store's statuses, building image folders."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: The installed console script (the same environment as the tests).
GBC_BIN = Path(sys.executable).parent / "gbc"


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args)``: ``gbc ARGS`` in this process (click's runner), arguments as strings.

    An exception the command does not handle is raised in the test, unless
    ``catch_exceptions=True`` (then it is ``result.exception``, with exit code 1).
    """
    from click.testing import CliRunner

    from gbc.cli.main import cli

    def run(*args, catch_exceptions=False):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)

    return run


@pytest.fixture(scope="session")
def run_gbc():
    """``run_gbc(*args, cwd=None, timeout=240)``: ``python -m gbc.cli.main ARGS`` as a child process (text output)."""

    def run(*args, cwd=None, timeout=240):
        return subprocess.run([sys.executable, "-m", "gbc.cli.main", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)

    return run


@pytest.fixture(scope="session")
def gbc_bin() -> Path:
    """The installed ``gbc`` console script."""
    return GBC_BIN


@pytest.fixture(scope="session")
def clean_error():
    """``clean_error(result)``: asserts a non-zero exit with exactly one ``Error: ...`` line on
    stderr and no traceback; returns that line."""

    def check(result) -> str:
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output
        assert len(errors[0]) > len("Error: ") + 10, errors
        return errors[0]

    return check


@pytest.fixture(scope="session")
def store_statuses():
    """``store_statuses(path)``: ``{key: status}`` of the store (or store with shards) at ``path``."""
    import gbc

    def read(path):
        with gbc.open_store(str(path)) as store:
            return {key: record.status for key, record in store.statuses()}

    return read


@pytest.fixture
def image_folder(tmp_path):
    """``image_folder(names, size=(h, w), seed=0)``: a folder ``tmp_path/images`` of random-noise
    images under ``names`` (sub-folders made as needed; the extension picks the format)."""

    def make(names, size=(60, 80), seed=0, name="images"):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for image_name in names:
            path = folder / image_name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        return folder

    return make
