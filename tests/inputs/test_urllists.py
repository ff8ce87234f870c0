"""URL lists (Parquet, CSV, TSV, JSONL, text) and downloads from a local HTTP server on 127.0.0.1."""

import json
import threading

import pytest

from gbc.inputs import Columns, DownloadOptions, Downloader, InputError, InputStream, resolve
from input_helpers import closed_port, png_bytes

FAST = DownloadOptions(concurrency=4, timeout_s=1.0, retries=2, backoff_s=0.01, max_bytes=1024 * 1024)


def write_list(path, rows, fmt):
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        names = list(rows[0])
        path.write_text(sep.join(names) + "\n" + "".join(sep.join(str(r[n]) for n in names) + "\n" for r in rows))


def test_every_url_ends_as_bytes_or_a_reason(server, tmp_path):
    b = server.base
    urls = {"ok": f"{b}/img/1.png", "missing": f"{b}/missing", "flaky": f"{b}/flaky/x", "slow": f"{b}/slow",
            "html": f"{b}/html", "redirect": f"{b}/redirect/2", "loop": f"{b}/loop", "big": f"{b}/big",
            "unreachable": f"http://127.0.0.1:{closed_port()}/a.png"}
    with Downloader(FAST) as dl:
        got = {name: dl.fetch(url) for name, url in urls.items()}
    assert got["ok"][0] == png_bytes(1)
    assert got["redirect"][0] == png_bytes(2)
    assert got["flaky"][0] == png_bytes(99) and server.hits["/flaky/x"] == 2  # 500, then 200 on the retry
    assert got["missing"][1].startswith("HTTP 404") and got["missing"][2] == "HTTP404"
    assert server.hits["/missing"] == 1  # a 404 is final: no retry
    assert got["slow"][2] == "Timeout" and "timed out after 1 s" in got["slow"][1] and "3 attempts" in got["slow"][1]
    assert got["html"][2] == "NotAnImage" and "text/html" in got["html"][1]
    assert got["loop"][2] == "TooManyRedirects"
    assert got["big"][2] == "TooLarge"
    assert got["unreachable"][2] == "ConnectError" and urls["unreachable"] in got["unreachable"][1]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_list_formats_with_key_and_caption_columns(server, tmp_path, fmt):
    rows = [{"link": f"{server.base}/img/{i}.png", "id": f"im{i}", "alt": f"caption {i}"} for i in range(5)]
    rows.append({"link": f"{server.base}/missing", "id": "gone", "alt": "x"})
    path = tmp_path / f"list.{fmt}"
    write_list(path, rows, fmt)
    stream = InputStream(resolve([str(path)]), columns=Columns(url="link", key="id", caption="alt"), download=FAST)
    items = {s.key: s for s in stream}
    assert set(items) == {f"im{i}" for i in range(5)} | {"gone"}
    assert items["im3"].data == png_bytes(3) and items["im3"].caption == "caption 3"
    assert items["im3"].url == f"{server.base}/img/3.png" and items["im3"].origin == f"list.{fmt}:3"
    assert items["gone"].data is None and items["gone"].error.startswith("HTTP 404")


def test_default_keys_text_list_and_bad_rows(server, tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text(f"{server.base}/img/0.png\n# a comment\nftp://nowhere/x.png\n{server.base}/img/1.png\n")
    items = {s.key: s for s in InputStream(resolve([str(path)]), download=FAST)}
    assert items["urls/000000000"].data == png_bytes(0) and items["urls/000000002"].data == png_bytes(1)
    assert items["urls/000000001"].error_type == "BadURL"
    jl = tmp_path / "j.jsonl"
    jl.write_text('{"url": "%s/img/4.png"}\nnot json\n{"other": 1}\n' % server.base)
    items = {s.key: s for s in InputStream(resolve([str(jl)]), download=FAST)}
    assert items["j/000000000"].data == png_bytes(4)
    assert items["j/000000001"].error_type == "BadListRow" and items["j/000000002"].error_type == "NoURL"


def test_list_without_the_url_column_is_one_clear_error(tmp_path):
    path = tmp_path / "l.csv"
    write_list(path, [{"href": "http://x/1.png"}], "csv")
    with pytest.raises(InputError, match=r"has no column 'url' \(--url-col\); its columns: href"):
        InputStream(resolve([str(path)]))
    with pytest.raises(InputError, match="--caption-col"):
        InputStream(resolve([str(path)]), columns=Columns(url="href", caption="alt"))


def test_skipped_rows_are_never_downloaded_and_downloads_stay_bounded(server, tmp_path):
    rows = [{"url": f"{server.base}/img/{i}.png"} for i in range(40)]
    path = tmp_path / "l.parquet"
    write_list(path, rows, "parquet")
    active, peak, lock = [0], [0], threading.Lock()
    original = Downloader.fill

    def counting_fill(self, source):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original(self, source)
        finally:
            with lock:
                active[0] -= 1

    Downloader.fill = counting_fill
    try:
        stream = InputStream(resolve([str(path)]), download=FAST,
                             skip=lambda key, origin: "finished" if int(key[-2:]) % 4 else None)
        got = sorted(s.key for s in stream)
    finally:
        Downloader.fill = original
    assert got == [f"l/{i:09d}" for i in range(0, 40, 4)]
    assert sum(server.hits.get(f"/img/{i}.png", 0) for i in range(40)) == 10
    assert peak[0] <= FAST.concurrency
