"""Every stored value carries a CRC-32: damage anywhere in it is found before it is decoded,
and values written before the checksum existed are still read."""

import zlib

import lmdb
import pytest

from gbc.store import GraphStore, StoreCorruptError
from gbc.store.codec import VALUE_FORMAT_VERSION, ValueCodec, ValueDecodeError

from store_helpers import gbc10m_graph


def _version1(codec: ValueCodec, value: bytes) -> bytes:
    """The same value as the layout before checksums wrote it (3-byte header, no CRC)."""
    return bytes((1,)) + value[1:3] + value[7:]


@pytest.mark.parametrize("use_dictionary", [False, True])
def test_every_flipped_byte_of_a_value_is_detected(use_dictionary):
    codec = ValueCodec()
    graph = gbc10m_graph(3)
    if use_dictionary:
        samples = [codec.graph_payload(gbc10m_graph(i))[0] for i in range(200)]
        codec.add_dictionary(1, codec.train_dictionary(samples, 4096))
        codec.use_dictionary(1)
    value = codec.encode_graph(graph)
    assert value[0] == VALUE_FORMAT_VERSION == 2
    assert codec.decode_graph(value) == graph
    for at in range(len(value)):
        damaged = bytearray(value)
        damaged[at] ^= 0x80 if at % 2 else 0x01
        with pytest.raises(ValueDecodeError):
            codec.decode_graph(bytes(damaged))


def test_checksum_mismatch_is_named():
    codec = ValueCodec()
    value = bytearray(codec.encode_graph(gbc10m_graph(0)))
    value[2] ^= 0x01  # the in-edge mode: without a checksum this would decode to other in-edges
    with pytest.raises(ValueDecodeError, match="checksum mismatch"):
        codec.decode_graph(bytes(value))
    json_value = bytearray(codec.encode_json({"a": [1, 2, 3]}))
    json_value[-1] ^= 0x10
    with pytest.raises(ValueDecodeError, match="checksum mismatch"):
        codec.decode_json(bytes(json_value))


def test_values_of_the_first_format_are_still_read():
    codec = ValueCodec()
    graph = gbc10m_graph(5)
    old = _version1(codec, codec.encode_graph(graph))
    assert old[0] == 1
    assert codec.decode_graph(old) == graph
    assert codec.decode_json(_version1(codec, codec.encode_json({"k": "v"}))) == {"k": "v"}


def test_store_reports_a_damaged_value_and_reads_old_values(tmp_path):
    path = tmp_path / "s.lmdb"
    with GraphStore(path, readonly=False, dict_train_samples=0) as store:
        for i in range(4):
            store.put(f"k{i}", gbc10m_graph(i))
        raw = dict(store.raw_items())
    env = lmdb.open(str(path), max_dbs=8)
    graphs = env.open_db(b"graphs")
    with env.begin(write=True) as txn:
        damaged = bytearray(raw["k1"])
        damaged[len(damaged) // 2] ^= 0x04
        txn.put(b"k1", bytes(damaged), db=graphs)
        txn.put(b"k2", _version1(ValueCodec(), raw["k2"]), db=graphs)
    env.close()
    with GraphStore(path) as store:
        assert store["k0"] == gbc10m_graph(0)
        assert store["k2"] == gbc10m_graph(2)  # an old-format value
        with pytest.raises(StoreCorruptError, match="'k1'.*checksum mismatch"):
            store["k1"]


def test_checksum_covers_header_and_body():
    codec = ValueCodec()
    value = codec.encode_graph(gbc10m_graph(1))
    assert int.from_bytes(value[3:7], "little") == zlib.crc32(value[7:], zlib.crc32(value[:3]))


@pytest.mark.parametrize("use_dictionary", [False, True])
def test_new_frames_leave_the_content_hash_to_the_value_checksum(use_dictionary):
    # The CRC-32 of the value is checked before decompression; zstd's own content hash of
    # every payload is not written again. Frames that carry one (older values) still decode.
    import zstandard

    codec = ValueCodec()
    if use_dictionary:
        samples = [codec.graph_payload(gbc10m_graph(i))[0] for i in range(200)]
        codec.add_dictionary(1, codec.train_dictionary(samples, 4096))
        codec.use_dictionary(1)
    value = codec.encode_graph(gbc10m_graph(5))
    frame = value[11:] if use_dictionary else value[7:]
    assert zstandard.get_frame_parameters(frame).has_checksum is False
    payload, mode = codec.unpack(value)
    with_hash = zstandard.ZstdCompressor(write_checksum=True).compress(payload)
    older = bytes((VALUE_FORMAT_VERSION, 1, mode))
    older += zlib.crc32(with_hash, zlib.crc32(older)).to_bytes(4, "little") + with_hash
    assert zstandard.get_frame_parameters(with_hash).has_checksum is True
    assert codec.decode_graph(older) == codec.decode_graph(value)
