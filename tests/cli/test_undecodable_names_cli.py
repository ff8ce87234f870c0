"""A file name that is not valid UTF-8 (real bytes on disk) through `gbc annotate`, `ls`, `show` and
`export`, each a real subprocess: the run annotates it under a readable, lossless key and nothing
anywhere fails to encode it."""

import csv
import json
import os
import tarfile

import pytest
from PIL import Image

BAD = b"bad\xffutf8.jpg"
KEY = "bad\\xffutf8.jpg"  # the key: the byte that is not UTF-8 written as \xff


def no_trouble(proc):
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "UnicodeEncodeError" not in text and "codec can't" not in text, text


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, run_gbc):
    tmp = tmp_path_factory.mktemp("names")
    folder = tmp / "images"
    folder.mkdir()
    bad_path = os.path.join(os.fsencode(folder), BAD)
    try:
        Image.new("RGB", (96, 64), (200, 30, 30)).save(open(bad_path, "wb"), format="JPEG")
    except OSError as exc:  # a file system that only takes UTF-8 names
        pytest.skip(f"cannot create a file named {BAD!r} here: {exc}")
    Image.new("RGB", (96, 64), (30, 30, 200)).save(folder / "good.jpg")
    out = tmp / "out.lmdb"
    proc = run_gbc("annotate", folder, "-o", out, "--mllm", "scripted", "--detector", "scripted", "--progress",
                   "--json")
    return tmp, folder, out, proc


def test_annotate_does_the_file_with_a_readable_key(annotated, run_gbc):
    tmp, folder, out, proc = annotated
    no_trouble(proc)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["done"], summary["failed"]) == (2, 0)
    listing = run_gbc("ls", out, "--json")
    no_trouble(listing)
    assert sorted((r["key"], r["status"]) for r in json.loads(listing.stdout)) == [(KEY, "done"), ("good.jpg", "done")]
    plain = run_gbc("ls", out)
    no_trouble(plain)
    assert KEY in plain.stdout
    # a rerun skips it: the key read back from the store is the key the run makes
    again = run_gbc("annotate", folder, "-o", out, "--mllm", "scripted", "--detector", "scripted", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["images"] == 0, again.stderr


def test_show_finds_it_by_its_key(annotated, run_gbc):
    tmp, folder, out, _ = annotated
    # by its key as printed, or by the name's own bytes as a shell passes them
    for args in ([KEY], [KEY, "--json"], [os.fsdecode(BAD)]):
        proc = run_gbc("show", out, *args)
        no_trouble(proc)
        assert proc.returncode == 0, proc.stderr
        assert KEY == json.loads(proc.stdout)["img_path"] if "--json" in args else KEY in proc.stdout.splitlines()[0]
    graph = json.loads(run_gbc("show", out, KEY, "--json").stdout)
    assert graph["img_path"] == KEY


@pytest.mark.parametrize("fmt", ["csv", "wds", "parquet"])
def test_export_reads_the_image_back_through_the_key(annotated, fmt, run_gbc):
    tmp, folder, out, _ = annotated
    target = tmp / f"export-{fmt}" / ("train.csv" if fmt == "csv" else "shards")
    proc = run_gbc("export", out, "-o", target, "--format", fmt, "--images-root", folder, "--captions", "short",
                   "--json")
    no_trouble(proc)
    assert proc.returncode == 0, proc.stderr
    if fmt == "csv":
        with open(target, encoding="utf-8", newline="") as fh:  # valid UTF-8 throughout
            rows = list(csv.reader(fh, delimiter="\t"))[1:]
        paths = {row[0] for row in rows}
        assert len(paths) == 2 and all(os.path.isfile(p) for p in paths)  # every image is reachable
        assert any(Image.open(p).getpixel((48, 32))[0] > 150 for p in paths)  # the red one: the bad name
    elif fmt == "wds":
        with tarfile.open(target / "00000.tar") as tar:
            metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
            jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        assert sorted({m["image_key"] for m in metas}) == [KEY, "good.jpg"]
        assert len(jpgs) == len(metas)  # no sample lost its image
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(target / "00000.parquet").to_pylist()
        assert sorted({r["image_key"] for r in table}) == [KEY, "good.jpg"]
        assert all(r["image"] is not None for r in table)
        assert any(r["image_key"] == KEY and r["image_path"].endswith(KEY) for r in table)
