"""Compact, versioned byte encoding of graphs (and of any JSON value) for the LMDB store.

A stored value is a 7-byte header followed by a payload::

    byte 0      value format version (``VALUE_FORMAT_VERSION``)
    byte 1      compression: 0 = none, 1 = zstd, 2 = zstd with a store dictionary
                (then the 4 bytes after the header hold the dictionary id, little-endian u32)
    byte 2      in-edge mode: how ``in_edges`` are rebuilt (see ``IN_EDGES_*``)
    bytes 3..6  CRC-32 of bytes 0..2 and of everything after byte 6, little-endian u32

Version 1 values (written before the checksum existed) have the same first three bytes and
no checksum; they are still read. The checksum catches damage anywhere in a value, header
included, before anything is decompressed or parsed, so a graph that was validated when it
was written can be trusted when it is read back.

The payload is the graph's lossless JSON (``GbcGraph.to_dict()`` semantics: exactly the
fields that were read or set). Every edge of a GBC graph is stored twice (in the source's
``out_edges`` and in the target's ``in_edges``); when the in-edges of every vertex are
exactly what the out-edges imply (in source-vertex order, or sorted by source id as the
reference pipeline writes them), they are left out and rebuilt on decoding from the
already validated out-edge objects. That drops a quarter of the objects pydantic has to
validate and about a third of the JSON. Otherwise they are stored as they are.

Decoding never returns a half-valid object: any failure raises ``ValueDecodeError``.
"""

from __future__ import annotations

import operator
import struct
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgspec

from gbc.errors import GbcError, describe_validation_error
from gbc.schemas.graph import Edge, GbcGraph
from gbc.schemas.views import decode_graph_view, in_edge_lists, restore_view_in_edges
from gbc.schemas.views import with_json as with_json_of
from gbc.store.graph_json import NotSpliceable, view_with_lossless_json
from gbc.store.payload_json import EXCLUDE_IN_EDGES, payload_json

#: Version of the value layout written by this module; decoders accept every version up to it.
VALUE_FORMAT_VERSION = 2
#: First version whose values carry a CRC-32 in the header.
CHECKSUM_VERSION = 2

COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
COMPRESSION_ZSTD_DICT = 2

#: In-edges stored explicitly in the JSON.
IN_EDGES_EXPLICIT = 0
#: In-edges of each vertex = its incoming out-edges, in the order of their source vertices.
IN_EDGES_SOURCE_ORDER = 1
#: Same edges, stably sorted by source id (the order the reference pipeline writes).
IN_EDGES_SORTED_BY_SOURCE = 2

#: zstd level used for values: with a dictionary it compresses GBC graphs best among levels
#: 1-5 (level 5 is larger and 2.5x slower) at about 40,000 graphs/s on one core.
DEFAULT_COMPRESSION_LEVEL = 3
#: Largest decompressed payload accepted: a damaged frame header must not make a reader
#: allocate gigabytes before the checksum rejects it.
MAX_PAYLOAD_BYTES = 1 << 28

_DICT_ID = struct.Struct("<I")
_CRC = struct.Struct("<I")
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


class ValueDecodeError(GbcError, ValueError):
    """A stored value cannot be decoded (damaged bytes, unknown version, invalid graph)."""


# ---------------------------------------------------------------------------- in-edges
def derive_in_edges(graph: GbcGraph) -> Optional[List[List[Edge]]]:
    """The in-edge list of each vertex implied by the out-edges, in source-vertex order.

    Out-edges count as they will be serialised (an unset field is written as absent = []).
    Returns None when the ids are ambiguous (duplicates) or an edge points to a missing
    vertex: such graphs keep their in-edges explicitly.
    """
    vertices = graph.vertices
    position: Dict[str, int] = {}
    for i, v in enumerate(vertices):
        position[v.vertex_id] = i
    if len(position) != len(vertices):
        return None
    ins: List[List[Edge]] = [[] for _ in vertices]
    for v in vertices:
        if "out_edges" not in v.__pydantic_fields_set__:
            continue
        for e in v.out_edges:
            j = position.get(e.target)
            if j is None:
                return None
            ins[j].append(e)
    return ins


def _source(e: Edge) -> str:
    return e.source


_EXTRA = operator.attrgetter("__pydantic_extra__")
_EDGE_PARTS = (
    # What decides how an edge serialises: values, which fields were set, extra fields, class.
    operator.attrgetter("__dict__"),
    operator.attrgetter("__pydantic_fields_set__"),
    _EXTRA,
    type,
)


def _serialise_alike(xs: List[Edge], ys: List[Edge]) -> bool:
    """Two equally long edge lists that serialise identically, item by item."""
    if all(map(operator.is_, xs, ys)):  # the same objects (e.g. a graph read from a store)
        return True
    if not all(list(map(part, xs)) == list(map(part, ys)) for part in _EDGE_PARTS):
        return False
    # Declared fields hold the types their fields validate to, but extra fields keep what they
    # were given, and Python's == holds 1 == 1.0 == True: compare what would be written.
    extras = list(map(_EXTRA, xs))
    if not any(extras):
        return True
    written = _extras_json(extras)
    return written is not None and written == _extras_json(list(map(_EXTRA, ys)))


def _extras_json(extras: List[Optional[Dict[str, Any]]]) -> Optional[List[bytes]]:
    try:
        return [_json_encode(x) if x else b"" for x in extras]
    except (TypeError, ValueError):  # not JSON (pydantic may still write it): never alike
        return None


def in_edges_mode(graph: GbcGraph) -> int:
    """The most compact in-edge mode that rebuilds ``graph`` exactly."""
    vertices = graph.vertices
    if not vertices:
        return IN_EDGES_EXPLICIT
    position: Dict[str, int] = {}
    for i, v in enumerate(vertices):
        if "in_edges" not in v.__pydantic_fields_set__:
            return IN_EDGES_EXPLICIT
        position[v.vertex_id] = i
    if len(position) != len(vertices):
        return IN_EDGES_EXPLICIT
    # The common case in one pass: each out-edge, in source-vertex order, is the next in-edge
    # of its target (the same object, or an equal one without extra fields).
    actual = [v.in_edges for v in vertices]
    filled = [0] * len(vertices)
    for v in vertices:
        if "out_edges" not in v.__pydantic_fields_set__:
            continue
        for e in v.out_edges:
            j = position.get(e.target)
            if j is None:
                return IN_EDGES_EXPLICIT
            k = filled[j]
            ins = actual[j]
            if k >= len(ins):
                return IN_EDGES_EXPLICIT  # more out-edges to it than in-edges: no mode matches
            f = ins[k]
            if f is not e and (f.__dict__ != e.__dict__ or f.__pydantic_fields_set__ != e.__pydantic_fields_set__
                               or type(f) is not type(e) or f.__pydantic_extra__ or e.__pydantic_extra__):
                return _in_edges_mode_slowly(graph, vertices)
            filled[j] = k + 1
    if filled == list(map(len, actual)):
        return IN_EDGES_SOURCE_ORDER
    return IN_EDGES_EXPLICIT  # fewer out-edges to some vertex than in-edges


def _in_edges_mode_slowly(graph: GbcGraph, vertices: List[Any]) -> int:
    """``in_edges_mode`` when the in-edges are not simply the out-edges in source order:
    sorted by source id, or equal only once extra fields are compared as written."""
    derived = derive_in_edges(graph)
    if derived is None:
        return IN_EDGES_EXPLICIT
    actual = [v.in_edges for v in vertices]
    if list(map(len, derived)) != list(map(len, actual)):
        return IN_EDGES_EXPLICIT  # sorting does not change counts: no mode can match
    flat_actual = [e for lst in actual for e in lst]
    if _serialise_alike([e for lst in derived for e in lst], flat_actual):
        return IN_EDGES_SOURCE_ORDER
    ordered = [sorted(lst, key=_source) if len(lst) > 1 else lst for lst in derived]
    if _serialise_alike([e for lst in ordered for e in lst], flat_actual):
        return IN_EDGES_SORTED_BY_SOURCE
    return IN_EDGES_EXPLICIT


def _restore_in_edges(graph: GbcGraph, mode: int) -> None:
    """Rebuild in-edges from out-edges on a freshly decoded graph (``in_edge_lists``: the same
    Edge instances as the out-edges, validated once). The payload leaves the in-edges out
    (older values hold ``"in_edges": []``): the field is marked as set here, as it was in the
    graph that was written."""
    vertices = graph.vertices
    try:
        lists = in_edge_lists(vertices, sort_by_source=mode == IN_EDGES_SORTED_BY_SOURCE)
    except ValueError as exc:
        raise ValueDecodeError(str(exc)) from None
    for v, ins in zip(vertices, lists):
        v.__dict__["in_edges"] = ins
        v.__pydantic_fields_set__.add("in_edges")


def serialise_payload(graph: GbcGraph, mode: int) -> bytes:
    """The JSON payload of ``graph`` (fields set marked already) for in-edge mode ``mode``."""
    # pydantic's serialiser itself gives bytes; ``model_dump_json`` would decode them to a str
    # that is encoded again (about 5% of the serialisation).
    to_json = graph.__pydantic_serializer__.to_json
    if mode == IN_EDGES_EXPLICIT:
        return to_json(graph, exclude_unset=True)
    if type(graph) is GbcGraph:  # a subclass may have fields of its own: its own serialiser
        fast = payload_json()
        if fast is not None:
            return fast(graph)
    return to_json(graph, exclude_unset=True, exclude=EXCLUDE_IN_EDGES)


# ---------------------------------------------------------------------------- codec
class ValueCodec:
    """Encodes graphs and JSON values to store values and back.

    Dictionaries are registered with ``add_dictionary``; ``load_dictionary(id)`` is called
    for an id that is not known yet (a reader meeting values written after it opened the
    store). ``use_dictionary`` selects the dictionary used for writing.
    """

    def __init__(
        self,
        level: int = DEFAULT_COMPRESSION_LEVEL,
        load_dictionary: Optional[Callable[[int], Optional[bytes]]] = None,
    ):
        import zstandard

        self._zstd = zstandard
        self.level = level
        self._load_dictionary = load_dictionary
        self._dict_bytes: Dict[int, bytes] = {}
        self._decompressors: Dict[int, Any] = {0: zstandard.ZstdDecompressor()}
        self._plain_compressor = self._compressor(level)
        self.dictionary_id: Optional[int] = None
        self._dict_compressor = None

    def _compressor(self, level: int, dict_data: Any = None) -> Any:
        # No zstd content checksum: the value's CRC-32 (see the module doc) is checked before
        # anything is decompressed; a second hash of every payload would cost ~1 us per value
        # each way. Frames of older values that carry one are still checked by zstd.
        return self._zstd.ZstdCompressor(level=level, dict_data=dict_data, write_checksum=False)

    # -- dictionaries
    def add_dictionary(self, dict_id: int, data: bytes) -> None:
        self._dict_bytes[dict_id] = data
        self._decompressors.pop(dict_id, None)

    def use_dictionary(self, dict_id: Optional[int]) -> None:
        """Compress new values with dictionary ``dict_id`` (None: no dictionary)."""
        self.dictionary_id = dict_id
        if dict_id is None:
            self._dict_compressor = None
            return
        zd = self._zstd.ZstdCompressionDict(self._dict_bytes[dict_id])
        zd.precompute_compress(level=self.level)  # otherwise every value re-digests the dictionary
        self._dict_compressor = self._compressor(self.level, zd)

    def writer_settings(self) -> Optional[Tuple[int, bytes, int]]:
        """``(dictionary id, dictionary, level)`` of the values this codec packs; None without a dictionary."""
        if self.dictionary_id is None:
            return None
        return self.dictionary_id, self._dict_bytes[self.dictionary_id], self.level

    def use_writer_settings(self, settings: Tuple[int, bytes, int]) -> None:
        """Pack values as the codec whose ``writer_settings()`` these are (in another process, say)."""
        dict_id, data, level = settings
        if (dict_id, level) == (self.dictionary_id, self.level) and self._dict_bytes.get(dict_id) == data:
            return
        self.level = level
        self._plain_compressor = self._compressor(level)
        self.add_dictionary(dict_id, data)
        self.use_dictionary(dict_id)

    def train_dictionary(self, samples: List[bytes], size: int) -> bytes:
        # Fixed cover parameters: the parameter search of the default takes 5-40x longer
        # (seconds, inside a write transaction) for a dictionary within 1% of the same size.
        # A smaller frequency table and a coarser scan (f=18, accel=3) halve the training
        # (74 -> 34 ms on 1,000 GBC10M-sized graphs) for values of the same size (+/- 0.1 %).
        return self._zstd.train_dictionary(size, samples, level=self.level, k=256, d=8, f=18, accel=3).as_bytes()

    def _decompressor(self, dict_id: int):
        dec = self._decompressors.get(dict_id)
        if dec is None:
            data = self._dict_bytes.get(dict_id)
            if data is None and self._load_dictionary is not None:
                data = self._load_dictionary(dict_id)
            if data is None:
                raise ValueDecodeError(f"compression dictionary {dict_id} is missing from the store")
            self._dict_bytes[dict_id] = data
            dec = self._zstd.ZstdDecompressor(dict_data=self._zstd.ZstdCompressionDict(data))
            self._decompressors[dict_id] = dec
        return dec

    # -- bytes
    def pack(self, payload: bytes, in_mode: int = IN_EDGES_EXPLICIT) -> bytes:
        if self._dict_compressor is not None:
            head = bytes((VALUE_FORMAT_VERSION, COMPRESSION_ZSTD_DICT, in_mode))
            body = _DICT_ID.pack(self.dictionary_id) + self._dict_compressor.compress(payload)
        else:
            head = bytes((VALUE_FORMAT_VERSION, COMPRESSION_ZSTD, in_mode))
            body = self._plain_compressor.compress(payload)
        return head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body

    def unpack(self, value: bytes) -> Tuple[bytes, int]:
        """``(payload, in-edge mode)`` of a stored value (its checksum verified first)."""
        if len(value) < 3:
            raise ValueDecodeError(f"value is too short ({len(value)} bytes)")
        version, compression, in_mode = value[0], value[1], value[2]
        if version == 0 or version > VALUE_FORMAT_VERSION:
            raise ValueDecodeError(
                f"value format version {version} is not supported (this gbc reads versions 1..{VALUE_FORMAT_VERSION})"
            )
        start = 3
        if version >= CHECKSUM_VERSION:
            if len(value) < 7:
                raise ValueDecodeError(f"value is too short for its checksum ({len(value)} bytes)")
            body = memoryview(value)[7:]
            if zlib.crc32(body, zlib.crc32(memoryview(value)[:3])) != _CRC.unpack_from(value, 3)[0]:
                raise ValueDecodeError("checksum mismatch: the stored bytes are damaged")
            start = 7
        if in_mode > IN_EDGES_SORTED_BY_SOURCE:
            raise ValueDecodeError(f"unknown in-edge mode {in_mode}")
        try:
            if compression == COMPRESSION_NONE:
                return bytes(value[start:]), in_mode
            if compression == COMPRESSION_ZSTD:
                frame = value[start:]
                self._check_size(frame)
                return self._decompressors[0].decompress(frame), in_mode
            if compression == COMPRESSION_ZSTD_DICT:
                if len(value) < start + 4:
                    raise ValueDecodeError("value is too short for its dictionary id")
                (dict_id,) = _DICT_ID.unpack_from(value, start)
                frame = value[start + 4:]
                self._check_size(frame)
                return self._decompressor(dict_id).decompress(frame), in_mode
        except self._zstd.ZstdError as exc:
            raise ValueDecodeError(f"compressed bytes are damaged ({exc})") from None
        raise ValueDecodeError(f"unknown compression code {compression}")

    def _check_size(self, frame: bytes) -> None:
        size = self._zstd.frame_content_size(frame)
        if size < 0 or size > MAX_PAYLOAD_BYTES:
            raise ValueDecodeError(f"compressed frame declares an impossible size ({size})")

    # -- graphs
    def graph_payload(self, graph: GbcGraph) -> Tuple[bytes, int]:
        """The JSON payload of ``graph`` and its in-edge mode (before compression)."""
        graph.mark_filled_fields()  # edges appended in place count as set
        mode = in_edges_mode(graph)
        return serialise_payload(graph, mode), mode

    def encode_graph(self, graph: GbcGraph) -> bytes:
        payload, mode = self.graph_payload(graph)
        return self.pack(payload, mode)

    def decode_graph(self, value: bytes) -> GbcGraph:
        return self.decode_payload(*self.unpack(value))

    def decode_payload(self, payload: bytes, mode: int) -> GbcGraph:
        """The graph of an unpacked value (``unpack`` gives ``payload`` and ``mode``)."""
        try:
            # The validator itself: model_validate_json only adds a Python call around it.
            graph = GbcGraph.__pydantic_validator__.validate_json(payload)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise ValueDecodeError(f"not a valid graph: {describe_validation_error(exc, limit=1)}") from None
        if mode != IN_EDGES_EXPLICIT:
            _restore_in_edges(graph, mode)
        return graph

    def decode_view(self, value: bytes, with_json: bool = False) -> Any:
        """A read-only ``GraphView`` of a stored graph (checksum verified, types checked by msgspec);
        ``with_json``: see ``decode_view_payload``."""
        return self.decode_view_payload(*self.unpack(value), with_json=with_json)

    def decode_view_payload(self, payload: bytes, mode: int, with_json: bool = False) -> Any:
        """The view of an unpacked value (``unpack`` gives ``payload`` and ``mode``). With
        ``with_json`` the view carries the graph's lossless JSON (``GraphView.lossless_json``);
        a graph whose JSON cannot be made from the payload alone (see ``gbc.store.graph_json``)
        comes as a full ``GbcGraph`` instead."""
        sort_by_source = mode == IN_EDGES_SORTED_BY_SOURCE
        try:
            if with_json and mode != IN_EDGES_EXPLICIT:
                try:
                    return with_json_of(*view_with_lossless_json(payload, sort_by_source))
                except NotSpliceable:
                    pass  # read as a full graph, below
            else:
                view = decode_graph_view(payload)
                if mode != IN_EDGES_EXPLICIT:
                    restore_view_in_edges(view, sort_by_source=sort_by_source)
                # explicit in-edges: the payload is the graph's lossless JSON already
                return with_json_of(view, payload) if with_json else view
        except (msgspec.DecodeError, ValueError) as exc:  # msgspec.ValidationError is a DecodeError
            raise ValueDecodeError(f"not a valid graph: {exc}") from None
        return self.decode_payload(payload, mode)

    # -- other JSON values (status, provenance, meta)
    def encode_json(self, obj: Any) -> bytes:
        return self.pack(_json_encode(obj))

    def decode_json(self, value: bytes) -> Any:
        payload, _ = self.unpack(value)
        try:
            return _json_decode(payload)
        except msgspec.DecodeError as exc:
            raise ValueDecodeError(f"damaged JSON ({exc})") from None
