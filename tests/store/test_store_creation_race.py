"""A reader polling a store that another process is creating sees no store or a complete one."""
import multiprocessing as mp
import time

import pytest

from gbc.store.lmdb_env import StoreCorruptError, StoreError
from gbc.store.lmdb_store import GraphStore

ROUNDS = 15


def _create(paths, go):
    go.wait()
    for path in paths:
        GraphStore(path, readonly=False).close()


@pytest.mark.timeout(60)
def test_a_reader_never_sees_a_half_created_store(tmp_path):
    paths = [str(tmp_path / f"s{i}.lmdb") for i in range(ROUNDS)]
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    writer = ctx.Process(target=_create, args=(paths, go))
    writer.start()
    go.set()
    seen_complete, deadline = 0, time.monotonic() + 45
    try:
        for path in paths:
            while time.monotonic() < deadline:
                try:
                    with GraphStore(path) as store:
                        assert store.meta["format_version"] >= 1
                    seen_complete += 1
                    break
                except StoreCorruptError as exc:  # the race this test is about
                    pytest.fail(f"reader saw an incomplete store: {exc}")
                except StoreError:
                    time.sleep(0.001)  # no store yet: wait
    finally:
        writer.join(30)
    assert writer.exitcode == 0
    assert seen_complete == ROUNDS
