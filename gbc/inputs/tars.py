"""WebDataset tar shards, local or over HTTP, read as a stream of samples.

A sample is the run of consecutive members that share a key: the member name up to the
first dot of its base name (``dir/000123.jpg`` and ``dir/000123.json`` are sample
``dir/000123``), as WebDataset and img2dataset write them. The sample's image is its first
member with an image extension (``jpg``, ``png``, ``webp``, ...); its ``.txt`` (else the
``caption`` field of its ``.json``) is the original caption, and the ``url`` field of its
``.json`` the image URL.

Members of samples that need no annotation (``skip`` says so, e.g. already in the store)
are passed over without reading their data: on a local shard ``tarfile`` then only reads
headers and seeks past the rest. A shard that ends early or is damaged stops with a warning
after the samples read so far; the run goes on with the next input.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from gbc.inputs.items import ImageSource

#: Member extensions taken as the sample's image, in order of preference.
IMAGE_MEMBER_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")

#: ``skip(keys, origins)`` returns, per sample, None to annotate it, else why it is passed over.
SkipManyFn = Callable[[List[str], List[str]], List[Optional[str]]]
#: Samples asked about at once (one store transaction).
SKIP_BATCH = 1024
WarnFn = Callable[[str], None]


def split_member(name: str) -> Tuple[str, str]:
    """``(sample key, extension)`` of a member name (the extension keeps its inner dots, lowercased)."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return (posixpath.join(folder, stem) if folder else stem), ext.lower()


class _Sample:
    __slots__ = ("key", "index", "skip", "members", "image_ext", "image", "text", "meta", "error")

    def __init__(self, key: str, index: int, skip: bool):
        self.key, self.index, self.skip = key, index, skip
        self.members: List[str] = []
        self.image_ext: Optional[str] = None
        self.image: Optional[bytes] = None
        self.text: Optional[bytes] = None
        self.meta: Optional[bytes] = None
        self.error: Optional[str] = None


def _rank(ext: str) -> int:
    last = ext.rsplit(".", 1)[-1]
    return IMAGE_MEMBER_EXTENSIONS.index(last) if last in IMAGE_MEMBER_EXTENSIONS else -1


def open_tar(location: str, timeout_s: float = 60.0):
    """A ``(tarfile, closer)`` pair reading ``location``: a local path (seekable, so skipped
    members are not read) or an http(s) URL (streamed)."""
    if location.startswith(("http://", "https://")):
        from gbc.inputs.download import open_stream

        stream = open_stream(location, timeout_s)
        try:
            tf = tarfile.open(fileobj=stream, mode="r|*")
        except BaseException:
            stream.close()
            raise
        return tf, lambda: (tf.close(), stream.close())
    tf = tarfile.open(location, mode="r:*")
    return tf, tf.close


def iter_tar(location: str, label: str, skip: SkipManyFn, warn: WarnFn, timeout_s: float = 60.0) -> Iterator[ImageSource]:
    """Samples of the shard at ``location`` as ``ImageSource`` items (see the module docstring).

    ``label`` names the shard in origins (``label:index``, index counting samples from 0) and
    in warnings. ``skip(keys, origins)`` answers for a batch of samples; those it passes over
    are not yielded (nor read). A sample without an image member is yielded with an
    ``error``; a key seen earlier in the same shard is left out with a warning.
    """
    try:
        tf, close = open_tar(location, timeout_s)
    except FileNotFoundError:
        warn(f"shard {location} does not exist; skipped")
        return
    except (tarfile.TarError, OSError, EOFError) as exc:
        warn(f"shard {location} cannot be read ({_why(exc)}); skipped")
        return
    try:
        if location.startswith(("http://", "https://")):
            yield from _streamed(tf, location, label, skip, warn)
        else:
            yield from _seekable(tf, location, label, skip, warn)
    finally:
        close()


class _Header:
    __slots__ = ("ext", "offset", "size")

    def __init__(self, ext: str, offset: int, size: int):
        self.ext, self.offset, self.size = ext, offset, size


def _seekable(tf, location: str, label: str, skip: SkipManyFn, warn: WarnFn) -> Iterator[ImageSource]:
    """A local shard: read every header first (the data is seeked past), ask ``skip`` about
    the samples in batches, then read only the members of the samples to annotate."""
    samples: List[Tuple[str, int, List[_Header]]] = []
    seen: set = set()  # keys of this shard only: bounded by the shard's size
    damaged = None
    try:
        while True:
            member = tf.next()
            if member is None:
                break
            tf.members.clear()  # tarfile keeps every header otherwise; ours are smaller
            if not member.isfile():
                continue
            key, ext = split_member(member.name)
            if samples and samples[-1][0] == key:
                samples[-1][2].append(_Header(ext, member.offset_data, member.size))
                continue
            if key in seen:
                warn(f"duplicate key {key!r} in shard {label} (sample {len(samples)}); left out")
                samples.append((key, -1, []))  # keeps the positions of the samples after it
                continue
            seen.add(key)
            samples.append((key, len(samples), [_Header(ext, member.offset_data, member.size)]))
    except (tarfile.TarError, OSError, EOFError) as exc:
        damaged = exc
    end = tf.offset
    size = os.fstat(tf.fileobj.fileno()).st_size if hasattr(tf.fileobj, "fileno") and not _compressed(tf) else None
    if damaged is not None:
        warn(f"shard {label} is damaged after {len(samples)} sample(s) ({_why(damaged)}); the rest of it is skipped")
    elif size is not None and size < end + 1024:
        warn(f"shard {label} has no end-of-archive marker (truncated?) after {len(samples)} sample(s)")
    seen.clear()
    fh = tf.fileobj
    for start in range(0, len(samples), SKIP_BATCH):
        chunk = [s for s in samples[start:start + SKIP_BATCH] if s[1] >= 0]
        answers = skip([s[0] for s in chunk], [f"{label}:{s[1]}" for s in chunk])
        for (key, index, headers), why in zip(chunk, answers):
            if why is not None:
                continue
            sample = _Sample(key, index, skip=False)
            for header in headers:
                sample.members.append(header.ext)
                wanted = _rank(header.ext) >= 0 and (sample.image_ext is None or _rank(header.ext) < _rank(sample.image_ext))
                if not (wanted or header.ext in ("txt", "json")):
                    continue
                try:
                    fh.seek(header.offset)
                    data = fh.read(header.size)
                except (OSError, EOFError) as exc:
                    data, sample.error = None, f"cannot read this sample from the shard {label} ({_why(exc)})"
                if data is not None and len(data) < header.size:
                    warn(f"shard {label} is truncated inside sample {index} ({key!r})")
                    data, sample.error = None, f"the shard {label} ends inside this sample"
                if data is None:
                    continue
                if wanted:
                    sample.image_ext, sample.image = header.ext, data
                elif header.ext == "txt":
                    sample.text = data
                else:
                    sample.meta = data
            yield _finish(sample, location, label)


def _compressed(tf) -> bool:
    return type(tf.fileobj).__name__ != "BufferedReader"


def _streamed(tf, location: str, label: str, skip: SkipManyFn, warn: WarnFn) -> Iterator[ImageSource]:
    """A shard over HTTP, read once in order: each sample is asked about when it starts."""
    seen: set = set()
    current: Optional[_Sample] = None
    index = 0
    try:
        for member in tf:
            tf.members.clear()
            if not member.isfile():
                continue
            key, ext = split_member(member.name)
            if current is None or key != current.key:
                if current is not None:
                    out = _finish(current, location, label)
                    if out is not None:
                        yield out
                    current = None
                if key in seen:
                    warn(f"duplicate key {key!r} in shard {label} (sample {index}); left out")
                    current = _Sample(key, index, skip=True)
                else:
                    seen.add(key)
                    current = _Sample(key, index, skip=skip([key], [f"{label}:{index}"])[0] is not None)
                index += 1
            current.members.append(ext)
            if current.skip:
                continue
            wanted = _rank(ext) >= 0 and (current.image_ext is None or _rank(ext) < _rank(current.image_ext))
            if wanted or ext in ("txt", "json"):
                fh = tf.extractfile(member)
                data = fh.read() if fh is not None else b""
                if wanted:
                    current.image_ext, current.image = ext, data
                elif ext == "txt":
                    current.text = data
                else:
                    current.meta = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        warn(f"shard {label} is truncated or damaged after {index} sample(s) ({_why(exc)}); the rest of it is skipped")
        if current is not None and not current.skip:
            current.error = f"the shard {label} ends or is damaged inside this sample ({_why(exc)})"
    if current is not None:
        out = _finish(current, location, label)
        if out is not None:
            yield out


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _finish(sample: _Sample, location: str, label: str) -> Optional[ImageSource]:
    if sample.skip:
        return None
    path = f"{location}#{sample.key}" + (f".{sample.image_ext}" if sample.image_ext else "")
    origin = f"{label}:{sample.index}"
    meta: Dict = {}
    if sample.meta:
        try:
            loaded = json.loads(sample.meta)
            meta = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            meta = {}
    caption = sample.text.decode("utf-8", "replace").strip() if sample.text is not None else meta.get("caption")
    url = meta.get("url")
    common = dict(key=sample.key, path=path, origin=origin,
                  url=url if isinstance(url, str) and url else None,
                  caption=caption if isinstance(caption, str) and caption else None)
    if sample.error is not None and sample.image is None:
        return ImageSource(error=sample.error, error_type="TruncatedShard", **common)
    if sample.image is None:
        found = ", ".join("." + e for e in sample.members) or "nothing"
        return ImageSource(error=f"sample has no image member (found {found})", error_type="NoImageMember", **common)
    return ImageSource(data=sample.image, **common)


def iter_tar_keys(location: str, timeout_s: float = 60.0) -> Iterator[str]:
    """The sample keys of a shard in order, reading only member headers (on a local shard)."""
    tf, close = open_tar(location, timeout_s)
    seen: set = set()  # a key met again later in the shard was left out when annotating: here too
    try:
        for member in tf:
            if not member.isfile():
                continue
            key = split_member(member.name)[0]
            if key not in seen:
                seen.add(key)
                yield key
    finally:
        close()
