"""Stable sharding of image keys, for running one annotation job per shard.

Contract of :func:`shard_of`
----------------------------
``shard_of(key, n)`` returns an integer in ``range(n)``. It depends only on the UTF-8 bytes
of ``key`` and on ``n``: the first 8 bytes of ``blake2b(key.encode("utf-8"), digest_size=8)``
read as a big-endian unsigned integer, modulo ``n``. It is therefore

- stable across processes, machines, Python versions and runs (unlike ``hash()``, which is
  salted per process), so a rerun of shard ``i/N`` sees exactly the same keys;
- independent of the order and of the number of the other keys (each key is placed alone);
- a partition: every key falls in exactly one of the ``n`` shards.

Changing ``n`` moves keys between shards: keep the same ``N`` for all jobs of one run and
for its reruns.

Example::

    >>> from gbc.distributed.sharding import shard_of, parse_shard, select_shard
    >>> shard_of("cat.jpg", 4) in range(4)
    True
    >>> parse_shard("1/4")
    (1, 4)
    >>> keys = [("a", "a.jpg"), ("b", "b.jpg"), ("c", "c.jpg")]
    >>> sum(len(list(select_shard(keys, i, 2))) for i in range(2))
    3
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator, Tuple, TypeVar

__all__ = ["shard_of", "parse_shard", "select_shard"]

T = TypeVar("T")


def shard_of(key: str, n: int) -> int:
    """Return the shard (``0 <= shard < n``) that image ``key`` belongs to (see module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of shards must be a positive integer, got {n!r}")
    if not isinstance(key, str):
        raise TypeError(f"image key must be a string, got {type(key).__name__}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def parse_shard(text: str) -> Tuple[int, int]:
    """Parse ``"i/N"`` (0-based ``i``, ``0 <= i < N``) into ``(i, N)``; ``ValueError`` otherwise.

    Slurm-style ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` fits when the array starts at 0.
    """
    if not isinstance(text, str):
        raise ValueError(f"shard must be given as 'i/N', got {text!r}")
    parts = text.strip().split("/")
    if len(parts) != 2:
        raise ValueError(f"shard must be given as 'i/N' (e.g. 0/4), got {text!r}")
    try:
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"shard must be two integers 'i/N' (e.g. 0/4), got {text!r}") from None
    if count < 1:
        raise ValueError(f"shard count N must be at least 1, got {text!r}")
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= i < N (0-based), got {text!r}")
    return index, count


def _key_of(item) -> str:
    # Items are image keys or (key, path) pairs, as produced by image discovery.
    if isinstance(item, str):
        return item
    if isinstance(item, (tuple, list)) and item:
        return item[0]
    key = getattr(item, "key", None)
    if isinstance(key, str):
        return key
    raise TypeError(f"cannot find the image key of {item!r}: expected a key or a (key, path) pair")


def select_shard(items: Iterable[T], index: int, count: int) -> Iterator[T]:
    """Yield the items of shard ``index`` of ``count``; items are keys or ``(key, path)`` pairs."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"number of shards must be a positive integer, got {count!r}")
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= i < N, got {index}/{count}")
    for item in items:
        if shard_of(_key_of(item), count) == index:
            yield item
