"""The plugin's background threads run at a lower OS priority than the driver (Linux:
a nice value per thread), so that on a busy driver the job's threads run first."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from definity_spark import _internal
from definity_spark.delivery.worker import BackgroundWorker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread nice values are a Linux feature")


def _nice(tid: int | None = None) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid if tid is not None else threading.get_native_id())


def _in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


@pytest.fixture(autouse=True)
def _restore():
    yield
    _internal.set_thread_nice(0)


def _lowered() -> int:
    _internal.lower_thread_priority()
    return _nice()


def test_a_plugin_thread_runs_below_the_process_and_the_caller_is_untouched():
    process = _nice(os.getpid())
    main_before = _nice()
    _internal.set_thread_nice(7)
    assert _in_thread(_lowered) == min(19, process + 7)
    assert _nice() == main_before  # the calling (host) thread keeps its priority
    assert _nice(os.getpid()) == process


def test_the_increment_counts_from_the_process_not_from_a_lowered_parent():
    # the delivery thread may be started by the (already lowered) extraction thread
    process = _nice(os.getpid())
    _internal.set_thread_nice(5)

    def parent() -> tuple[int, int]:
        mine = _lowered()
        return mine, _in_thread(_lowered)

    mine, child = _in_thread(parent)
    assert mine == child == min(19, process + 5)


def test_off_by_default():
    from definity_spark.settings import Settings

    assert Settings().thread_nice == 0 and _internal._thread_nice == 0
    assert _in_thread(_lowered) == _nice(os.getpid())


def test_zero_leaves_threads_at_the_process_priority_and_values_are_capped():
    process = _nice(os.getpid())
    _internal.set_thread_nice(0)
    assert _in_thread(_lowered) == process
    _internal.set_thread_nice(50)
    assert _in_thread(_lowered) == 19


def test_the_delivery_worker_thread_is_lowered():
    process = _nice(os.getpid())
    _internal.set_thread_nice(3)
    seen: list[int] = []
    worker: BackgroundWorker[int] = BackgroundWorker(lambda item: seen.append(_nice()), 10)
    assert worker.submit(1)
    assert worker.flush(10)
    worker.close(5)
    assert seen == [min(19, process + 3)]
