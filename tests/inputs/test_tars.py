"""Tar shards written by the webdataset library and an img2dataset-shaped folder, read as a stream."""

import json
import tarfile

import pytest

from gbc.inputs import InputError, InputStream, resolve
from gbc.inputs.tars import split_member
from input_helpers import img2dataset_folder, jpg_bytes, png_bytes, write_wds_shard


def collect(units, **kwargs):
    warnings = []
    stream = InputStream(units, warn=warnings.append, **kwargs)
    return list(stream), stream, warnings


def test_split_member_follows_webdataset_keys():
    assert split_member("a/b/000123.jpg") == ("a/b/000123", "jpg")
    assert split_member("x.seg.PNG") == ("x", "seg.png")


def test_webdataset_shard_samples_keys_and_metadata(tmp_path):
    write_wds_shard(tmp_path / "s.tar", [
        {"__key__": "k0", "jpg": jpg_bytes(0), "txt": "a red car", "json": json.dumps({"url": "http://h/0.jpg"}).encode()},
        {"__key__": "k1", "png": png_bytes(1), "json": json.dumps({"caption": "from json", "url": "http://h/1"}).encode()},
        {"__key__": "k2", "txt": "no picture here"},
        {"__key__": "k3", "jpg": b"this is not a jpeg", "txt": "broken"},
    ])
    items, stream, warnings = collect(resolve([str(tmp_path / "s.tar")]))
    by_key = {s.key: s for s in items}
    assert list(by_key) == ["k0", "k1", "k2", "k3"] and not warnings
    assert by_key["k0"].data == jpg_bytes(0) and by_key["k0"].caption == "a red car"
    assert by_key["k0"].url == "http://h/0.jpg" and by_key["k0"].origin == "s.tar:0"
    assert by_key["k1"].data == png_bytes(1) and by_key["k1"].caption == "from json"
    assert by_key["k2"].data is None and by_key["k2"].error_type == "NoImageMember" and ".txt" in by_key["k2"].error
    assert by_key["k3"].data == b"this is not a jpeg"  # the engine's decoder records why it fails
    assert stream.counts.found == 4


def test_img2dataset_folder_is_its_shards(tmp_path):
    keys = img2dataset_folder(tmp_path / "out", shards=3, per_shard=4)
    units = resolve([str(tmp_path / "out")])
    assert [u.kind for u in units] == ["tar"] * 3 and [u.label for u in units] == ["00000.tar", "00001.tar", "00002.tar"]
    items, _, warnings = collect(units)
    assert [s.key for s in items] == keys and not warnings
    assert items[5].caption == "photo number 5" and items[5].url.endswith(f"{keys[5]}.jpg")


def test_brace_range_with_a_missing_and_a_truncated_shard(tmp_path):
    img2dataset_folder(tmp_path, shards=3, per_shard=5)
    (tmp_path / "00001.tar").unlink()
    whole = (tmp_path / "00002.tar").read_bytes()
    # cut inside the data of the fourth sample's image
    with tarfile.open(tmp_path / "00002.tar") as tf:
        members = tf.getmembers()
    cut = members[9].offset_data + 10
    (tmp_path / "00002.tar").write_bytes(whole[:cut])
    items, stream, warnings = collect(resolve([str(tmp_path / "{00000..00002}.tar")]))
    assert any("00001.tar does not exist" in w for w in warnings)
    assert any("00002.tar is truncated" in w for w in warnings)
    good = [s for s in items if s.error is None]
    assert [s.key for s in good][:5] == [f"00000{i:04d}" for i in range(5)]
    assert {s.key for s in good} >= {"000020000", "000020001", "000020002"}
    cut_sample = [s for s in items if s.error is not None]
    assert [s.key for s in cut_sample] == ["000020003"] and cut_sample[0].error_type == "TruncatedShard"
    assert stream.counts.inputs_missing == 1


def test_duplicate_key_inside_a_shard_is_left_out_with_a_warning(tmp_path):
    write_wds_shard(tmp_path / "d.tar", [{"__key__": "a", "png": png_bytes(0)}, {"__key__": "b", "png": png_bytes(1)},
                                         {"__key__": "a", "png": png_bytes(2)}])
    items, _, warnings = collect(resolve([str(tmp_path / "d.tar")]))
    assert [s.key for s in items] == ["a", "b"] and items[0].data == png_bytes(0)
    assert len(warnings) == 1 and "duplicate key 'a'" in warnings[0]


def test_skipped_samples_are_not_read(tmp_path):
    write_wds_shard(tmp_path / "s.tar", [{"__key__": f"k{i}", "png": png_bytes(i)} for i in range(6)])
    asked = []

    def skip(key, origin):
        asked.append((key, origin))
        return "finished" if int(key[1:]) % 2 == 0 else None

    items, stream, _ = collect(resolve([str(tmp_path / "s.tar")]), skip=skip)
    assert [s.key for s in items] == ["k1", "k3", "k5"]
    assert asked == [(f"k{i}", f"s.tar:{i}") for i in range(6)]
    assert stream.counts.skipped == 3 and stream.counts.found == 6


@pytest.mark.parametrize("n", [2, 3, 7])
def test_shard_assignment_covers_every_sample_once(tmp_path, n):
    keys = img2dataset_folder(tmp_path / "d", shards=5, per_shard=3)
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "x.png").write_bytes(png_bytes(5))
    (tmp_path / "loose" / "y.png").write_bytes(png_bytes(6))
    units = resolve([str(tmp_path / "d"), str(tmp_path / "loose")])
    parts = []
    for i in range(n):
        items, stream, _ = collect(units, shard=(i, n))
        parts.append([s.key for s in items])
        if n <= 5:  # at least as many shards as jobs: whole shards per job
            assert stream.by_file
            read = {u.label for u in stream.selected_units() if u.kind == "tar"}
            assert read == {f"{k:05d}.tar" for k in range(5) if k % n == i}
    every = [k for part in parts for k in part]
    assert sorted(every) == sorted(keys + ["x.png", "y.png"])  # each exactly once


def test_unknown_input_kind_is_one_clear_error(tmp_path):
    (tmp_path / "notes.doc").write_text("hello")
    with pytest.raises(InputError, match="not an image, a folder, a tar shard or a URL list"):
        resolve([str(tmp_path / "notes.doc")])
    with pytest.raises(InputError, match="URL input must be a tar shard"):
        resolve(["http://127.0.0.1:9/list.html"])
    with pytest.raises(FileNotFoundError):
        resolve([str(tmp_path / "nothing")])
