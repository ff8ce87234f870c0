"""A minimal writer of POSIX ustar archives of regular files: the WebDataset shards and the
caption shards aligned with input shards are written with it."""

from __future__ import annotations

from pathlib import Path
from typing import List

_ZEROS = bytes(512)


class TarWriter:
    """A minimal writer of POSIX ustar archives of regular files (what WebDataset reads).

    ``tarfile`` builds each header through several layers of Python and dominates a
    text-only export; this writes the same 512-byte headers directly. Names must fit the
    100-byte name field (sample keys do).

    >>> tar = TarWriter(Path("00000.tar"))   # doctest: +SKIP
    >>> tar.add("000000000.txt", b"a caption"); tar.close()   # doctest: +SKIP
    """

    _BLOCK = 512
    _FLUSH_BYTES = 1 << 20

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self._parts: List[bytes] = []
        self._pending = 0
        template = bytearray(self._BLOCK)
        template[100:108] = b"0000444\0"  # mode r--r--r--
        template[108:116] = b"0000000\0"  # uid
        template[116:124] = b"0000000\0"  # gid
        template[136:148] = b"00000000000\0"  # mtime 0: reproducible shards
        template[148:156] = b"        "  # the checksum field counts as spaces while summing
        template[156:157] = b"0"  # regular file
        template[257:265] = b"ustar\x0000"
        self._template = bytes(template)
        # The checksum is the byte sum of the header: constant part + name + size.
        self._base_sum = sum(template)

    def add(self, name: str, data: bytes) -> None:
        raw = name.encode("utf-8")
        if len(raw) > 100:
            raise ValueError(f"tar member name too long: {name!r}")
        size = b"%011o\0" % len(data)
        t = self._template
        checksum = b"%06o\0 " % (self._base_sum + sum(raw) + sum(size))
        parts = self._parts
        parts += (raw, t[len(raw):124], size, t[136:148], checksum, t[156:], data)
        pad = -len(data) % self._BLOCK
        if pad:
            parts.append(_ZEROS[:pad])
        self._pending += len(data) + self._BLOCK
        if self._pending >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._fh.write(b"".join(self._parts))
        self._parts.clear()
        self._pending = 0

    def close(self) -> None:
        self._flush()
        self._fh.write(bytes(2 * self._BLOCK))  # end-of-archive marker
        self._fh.close()
