"""A compressed graph file cut short reads like a plain one cut short: the records before the
break, then one error naming the file and the line (no bare `Aborted!` from the CLI)."""

import gzip
import json
import subprocess
import sys

import pytest

from gbc.store import GraphFormatError, read_graphs


@pytest.fixture
def cut_files(tmp_path, gbc10m_records):
    text = "".join(json.dumps(r) + "\n" for r in gbc10m_records).encode()
    packed = gzip.compress(text)
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(packed[: len(packed) * 2 // 3])
    # the plain file cut where the compressed one stops giving whole lines
    with gzip.open(gz, "rb") as fh:
        whole = []
        try:
            for line in fh:
                whole.append(line)
        except EOFError:
            pass
    whole = [line for line in whole if line.endswith(b"\n")]
    plain = tmp_path / "cut.jsonl"
    plain.write_bytes(b"".join(whole) + b'{"img_path": "trunc')
    return gz, plain, len(whole)


def read_until_error(path):
    keys = []
    with pytest.raises(GraphFormatError) as info:
        for graph in read_graphs(path):
            keys.append(graph.img_path)
    return keys, str(info.value)


def test_reader_gives_the_records_before_the_break_then_names_file_and_line(cut_files):
    gz, plain, n = cut_files
    gz_keys, gz_error = read_until_error(gz)
    plain_keys, plain_error = read_until_error(plain)
    assert 0 < n and gz_keys == plain_keys and len(gz_keys) == n
    assert gz_error.startswith(f"{gz}, line {n + 1}: the compressed file is truncated or damaged (EOFError")
    assert plain_error.startswith(f"{plain}, line {n + 1}: invalid JSON")


def test_damaged_gzip_data_is_named_too(tmp_path, gbc10m_records):
    packed = bytearray(gzip.compress("".join(json.dumps(r) + "\n" for r in gbc10m_records).encode()))
    packed[len(packed) // 2: len(packed) // 2 + 64] = b"\0" * 64
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(packed))
    _, error = read_until_error(path)
    assert f"{path}, line " in error and "truncated or damaged" in error


@pytest.mark.parametrize("command", [["validate"], ["ls"], ["stats"], ["convert", "{out}.parquet"],
                                     ["export", "-o", "{out}.csv", "--text-only"]])
def test_cli_commands_say_where_the_file_broke(cut_files, tmp_path, command):
    gz, plain, n = cut_files
    results = {}
    for path in (gz, plain):
        args = [command[0], str(path), *[a.format(out=tmp_path / path.name) for a in command[1:]]]
        proc = subprocess.run([sys.executable, "-m", "gbc.cli.main", *args], capture_output=True, text=True, timeout=120)
        results[path] = proc
        assert "Aborted!" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and f"{path}, line {n + 1}:" in errors[0], proc.stderr
    # the records before the break are handled as for the plain file: same exit code, same output
    assert results[gz].returncode == results[plain].returncode != 0
    assert results[gz].stdout.replace(str(gz), "F") == results[plain].stdout.replace(str(plain), "F")
