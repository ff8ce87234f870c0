"""The README's command lines use commands and options that exist."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from gbc.cli.main import COMMANDS, cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _code_blocks(text):
    """(language, body) of each fenced code block, fences matched line by line."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if language is None:
                language, body = stripped[3:].strip() or "text", []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def _command_lines():
    lines = []
    for language, block in _code_blocks(README.read_text()):
        if language not in ("bash", "text"):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("gbc "):
                lines.append(line)
    return lines


def test_every_command_is_documented():
    used = {shlex.split(line)[1] for line in _command_lines()}
    assert set(COMMANDS) <= used, sorted(set(COMMANDS) - used)


@pytest.mark.parametrize("line", _command_lines())
def test_readme_command_line_uses_real_options(line):
    words = shlex.split(line.replace("$", ""))
    name = words[1]
    assert name in COMMANDS, f"README uses unknown command {name!r}"
    help_text = CliRunner().invoke(cli, [name, "--help"]).output
    for word in words[2:]:
        if word.startswith("--"):
            option = word.split("=")[0]
            assert option in help_text, f"{line!r}: {option} is not an option of gbc {name}"


def test_torch_install_lines_say_which_build_they_give():
    """A plain `pip install torch==...` from the package index is the CUDA build on Linux: the
    README must not call it the CPU build, and must show how to get the CPU build."""
    text = README.read_text()
    setup = text[text.index("## Set up"):text.index("## Quick start")]
    lines = [line.strip() for _, block in _code_blocks(setup) for line in block.splitlines()]
    cpu_lines = [line for line in lines if "--index-url https://download.pytorch.org/whl/cpu" in line]
    assert cpu_lines and all(re.search(r"pip install torch==[\d.]+ ", line) for line in cpu_lines)
    prose = " ".join(setup.split())
    assert "installs the CPU build of torch" not in prose
    assert re.search(r"plain `pip install torch==[\d.]+` on Linux installs the \*\*CUDA\*\* build", prose)
    assert "../shared/gbc-reference/" in prose and "skipped" in prose


def _python_blocks_using(name):
    return [block for language, block in _code_blocks(README.read_text()) if language == "python" and name in block]


def test_readme_python_run_api_example_runs_and_resumes(tmp_path):
    """The README's `gbc.annotate` example, run as written (scripted backends) on a copy of the
    example images, twice: the second run finds everything done and annotates nothing."""
    import shutil
    import subprocess
    import sys

    from gbc.annotators.images import discover_images

    blocks = _python_blocks_using("gbc.annotate(")
    assert len(blocks) == 1, "the README shows one gbc.annotate example"
    repo = README.parent
    shutil.copytree(repo / "examples" / "images", tmp_path / "examples" / "images")
    n = len(discover_images([tmp_path / "examples" / "images"]))
    assert n > 0
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    runs = [subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = (run.stdout.splitlines() for run in runs)
    assert first[0] == f"{n} 0 {{'done': {n}, 'failed': 0}}" and first[1] == f"{n} {n}"
    # resumed: nothing annotated again, the record of the second run says so
    assert second[0] == f"0 0 {{'done': {n}, 'failed': 0}}" and second[1] == f"{n} 0"
