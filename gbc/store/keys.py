r"""Image keys as text, also for file names that are not valid UTF-8.

POSIX file names are bytes. Python hands the bytes that are not UTF-8 over as lone surrogates
(``os.fsdecode(b"bad\xff.jpg") == "bad\udcff.jpg"``), which no JSON encoder, LMDB key, Parquet
column or UTF-8 terminal accepts. So an image key is the file's name (or relative path) unchanged
when it is valid UTF-8 -- every key made so far stays the same -- and otherwise a readable escaped
form of its bytes: each byte that is not part of a UTF-8 character is written ``\xNN`` and each
backslash is doubled. ``name_from_key`` turns an escaped key back into the original name, so the
key is lossless and the file can be found again from it.

>>> import os
>>> key_from_name(os.fsdecode(b"bad\xffutf8.jpg"))
'bad\\xffutf8.jpg'
>>> os.fsencode(name_from_key("bad\\xffutf8.jpg"))
b'bad\xffutf8.jpg'
>>> key_from_name("caf\u00e9.jpg")  # valid UTF-8: unchanged
'café.jpg'
"""

from __future__ import annotations

import os
import re
from typing import Optional

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def is_text(name: str) -> bool:
    """True when ``name`` holds no lone surrogate (it can be written as UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_from_name(name: str) -> str:
    """The image key of a file name or relative path as Python gives it (``os.fsdecode``)."""
    if is_text(name):
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the name's own bytes
    except UnicodeEncodeError:  # surrogates that did not come from undecodable bytes
        raw = name.encode("utf-8", "surrogatepass")
    # A backslash byte never occurs inside a multi-byte UTF-8 character, so doubling the
    # backslashes first keeps them apart from the \xNN escapes added by the decoder.
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def name_from_key(key: str) -> Optional[str]:
    """The file name (as ``os.fsdecode`` gives it) that ``key_from_name`` escaped into ``key``;
    ``None`` when ``key`` is not an escaped key (no escape in it, or a backslash that no escape
    explains)."""
    if "\\x" not in key:
        return None
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(key):
        if "\\" in key[pos:match.start()]:
            return None
        out += key[pos:match.start()].encode("utf-8")
        token = match.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        pos = match.end()
    if "\\" in key[pos:]:
        return None
    out += key[pos:].encode("utf-8")
    try:
        bytes(out).decode("utf-8")
        return None  # valid UTF-8: key_from_name would have left such a name unescaped
    except UnicodeDecodeError:
        return os.fsdecode(bytes(out))


def printable(text: str) -> str:
    """``text`` with any lone surrogate escaped, safe to print, log or store as UTF-8."""
    return text if is_text(text) else key_from_name(text)
