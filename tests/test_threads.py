"""The shared helper thread: results, errors, timeouts and exit."""

import threading

import pytest

from gbc._threads import HelperThread


def test_runs_functions_in_order_on_one_daemon_thread():
    helper = HelperThread("gbc-test-helper")
    names = [helper.submit(lambda: threading.current_thread().name) for _ in range(3)]
    assert [p.result() for p in names] == ["gbc-test-helper"] * 3
    assert helper._thread.daemon
    helper.close()
    helper._thread.join(5)
    assert not helper._thread.is_alive()


def test_an_exception_is_raised_to_whoever_asks_for_the_result():
    helper = HelperThread("gbc-test-helper")
    pending = helper.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pending.result()
    assert helper.submit(lambda: "still serving").result() == "still serving"
    helper.close()


def test_a_timed_out_call_is_abandoned_and_its_thread_exits_after_it():
    release = threading.Event()
    helper = HelperThread("gbc-test-helper")
    pending = helper.submit(lambda: release.wait(10) and "late")
    assert pending.wait(0.05) is False
    helper.close()
    release.set()
    helper._thread.join(5)
    assert not helper._thread.is_alive()
    assert pending.result() == "late"  # the late result reaches its Pending; the caller dropped it
