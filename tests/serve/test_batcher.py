"""Micro-batching: requests that arrive together share a model call; a full queue refuses."""

from __future__ import annotations

import threading
import time

import pytest

from resnets.serve.batcher import LaneStopped, MicroBatcher, QueueFull
from resnets.serve.metrics import Metrics, parse_samples


def test_items_queued_together_share_one_call_and_keep_their_order():
    sizes: list[int] = []
    gate = threading.Event()

    def fn(items):
        gate.wait(5)
        sizes.append(len(items))
        return [x * 10 for x in items]

    batcher = MicroBatcher(fn, "t", max_batch=4, wait_s=0.05, queue_size=16)
    futures = [batcher.submit(i) for i in range(9)]
    gate.set()
    assert [f.result(5) for f in futures] == [i * 10 for i in range(9)]
    batcher.close()
    assert sum(sizes) == 9 and max(sizes) == 4 and len(sizes) < 9


def test_a_lone_item_waits_at_most_the_window():
    batcher = MicroBatcher(lambda items: items, "t", max_batch=8, wait_s=0.02)
    start = time.monotonic()
    assert batcher.submit("x").result(5) == "x"
    assert time.monotonic() - start < 1.0
    batcher.close()


def test_a_failing_batch_fails_each_caller_and_the_worker_goes_on():
    def fn(items):
        if "bad" in items:
            raise RuntimeError("model failed")
        return items

    batcher = MicroBatcher(fn, "t", max_batch=1, wait_s=0)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.submit("bad").result(5)
    assert batcher.submit("good").result(5) == "good"
    batcher.close()


def test_a_full_queue_raises_queue_full_at_once():
    gate, running = threading.Event(), threading.Event()

    def fn(items):
        running.set()
        return [gate.wait(5) for _ in items]

    batcher = MicroBatcher(fn, "t", max_batch=1, wait_s=0, queue_size=2)
    first = batcher.submit(0)
    assert running.wait(5)  # the worker holds the first item; two more fill the queue
    queued = [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(QueueFull, match="queue is full"):
        batcher.submit(3)
    gate.set()
    assert all(f.result(5) for f in [first, *queued])
    batcher.close()


def test_close_finishes_queued_work_and_batch_sizes_reach_the_metrics():
    metrics = Metrics()
    batcher = MicroBatcher(lambda items: [time.sleep(0.01) or i for i in items], "lane",
                           max_batch=3, wait_s=0.05, metrics=metrics)
    futures = [batcher.submit(i) for i in range(6)]
    batcher.close()
    assert all(f.done() for f in futures) and [f.result() for f in futures] == list(range(6))
    samples = parse_samples(metrics.render())
    assert samples['resnets_batch_size_sum{lane="lane"}'] == 6
    assert samples['resnets_batch_size_count{lane="lane"}'] < 6


def _timed_single(batcher: MicroBatcher) -> float:
    start = time.monotonic()
    batcher.submit("x").result(5)
    return time.monotonic() - start


def test_adaptive_wait_ends_when_the_batch_is_as_large_as_the_last_one():
    # a lone client: its last batch was 1, so it never waits the window; fixed always does
    adaptive = MicroBatcher(lambda items: items, "a", max_batch=8, wait_s=3.0, adaptive=True)
    fixed = MicroBatcher(lambda items: items, "f", max_batch=8, wait_s=1.0)
    try:
        assert max(_timed_single(adaptive) for _ in range(3)) < 1.5  # not the 3 s window
        assert _timed_single(fixed) >= 0.95
    finally:
        adaptive.close()
        fixed.close()


def test_adaptive_wait_waits_for_as_many_as_were_in_flight_then_for_fewer():
    sizes: list[int] = []
    gate, running = threading.Event(), threading.Event()

    def fn(items):
        running.set()
        gate.wait(5)
        sizes.append(len(items))
        return items

    batcher = MicroBatcher(fn, "t", max_batch=8, wait_s=4.0, adaptive=True)
    try:
        held = batcher.submit(-1)  # the worker holds this one at the gate
        assert running.wait(5)
        queued = [batcher.submit(i) for i in range(3)]  # four in flight at once
        gate.set()
        assert held.result(5) == -1
        # the next batch takes the three queued and waits for a fourth, not the window
        start = time.monotonic()
        time.sleep(0.1)
        late = batcher.submit(3)
        assert [f.result(5) for f in (*queued, late)] == [0, 1, 2, 3]
        assert sizes == [1, 4] and time.monotonic() - start < 2.5  # not the 4 s window
        # fewer come back than were in flight: one full window, then no wait for one
        start = time.monotonic()
        assert batcher.submit(20).result(10) == 20
        assert time.monotonic() - start >= 3.9 and sizes[-1] == 1
        assert _timed_single(batcher) < 1.0
    finally:
        gate.set()
        batcher.close()


def test_serve_config_names_the_wait_modes():
    from resnets.serve.config import ServeConfig

    assert ServeConfig().batch_wait_mode == "adaptive"
    with pytest.raises(ValueError, match="batch_wait_mode must be one of adaptive, fixed"):
        ServeConfig(batch_wait_mode="eager")


@pytest.mark.parametrize("wait_s", [float("inf"), float("nan"), 1e10])
def test_a_wait_no_thread_can_make_is_refused_at_construction(wait_s):
    # accepted before: the worker thread died of OverflowError on its first wait for a
    # second item, and every future after it waited forever
    with pytest.raises(ValueError, match="wait_s"):
        MicroBatcher(lambda items: items, "t", max_batch=4, wait_s=wait_s)


def test_a_lane_reserves_queue_size_plus_max_batch_slots_and_frees_them():
    batcher = MicroBatcher(lambda items: items, "t", max_batch=2, wait_s=0, queue_size=1)
    with batcher.reserve(), batcher.reserve(), batcher.reserve():
        with pytest.raises(QueueFull, match="the t queue is full"), batcher.reserve():
            pass
    with batcher.reserve():  # all three slots came back
        assert batcher.submit("x").result(5) == "x"
    batcher.close()


def test_a_request_holding_a_slot_is_never_refused_when_it_submits():
    """Slots free when requests are answered, before the worker has taken the next queued
    batch: a request admitted on such a slot found the queue full and got a 503 after its
    upload was read and decoded. Without a slot the queue still refuses past queue_size."""
    taken = threading.Event()
    gate = threading.Event()

    class Gated(MicroBatcher):
        def _collect(self):  # after the first batch the worker waits before taking more
            if taken.is_set():
                gate.wait(5)
            taken.set()
            return super()._collect()

    batcher = Gated(lambda items: items, "t", max_batch=1, wait_s=0, queue_size=1)
    with batcher.reserve():
        assert batcher.submit("a").result(5) == "a"  # answered: its slot comes back
    with batcher.reserve():
        queued = batcher.submit("b")  # waits: the worker is held before taking it
    with batcher.reserve():  # one of the two slots (1 waiting + 1 running) is free
        late = batcher.submit("c")  # the queue holds b (queue_size): still accepted
        with pytest.raises(QueueFull, match=r"\(1 waiting\)"):
            batcher._holding.set(False)  # what a caller without a slot meets
            batcher.submit("d")
    gate.set()
    assert queued.result(5) == "b" and late.result(5) == "c"
    batcher.close()


def test_a_dying_worker_fails_the_queued_requests_and_zeroes_the_depth_gauge(monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the death is meant
    metrics = Metrics()
    gate, running = threading.Event(), threading.Event()

    class Died(BaseException):
        pass

    class Dying(MicroBatcher):
        def _run(self, batch):  # what no handler catches ends the worker thread
            running.set()
            gate.wait(5)
            raise Died

    batcher = Dying(lambda items: items, "lane", max_batch=1, wait_s=0, metrics=metrics)
    batcher.submit(0)
    assert running.wait(5)  # the worker holds the first item; two more wait
    queued = [batcher.submit(1), batcher.submit(2)]
    assert parse_samples(metrics.render())['resnets_queue_depth{lane="lane"}'] == 2
    gate.set()
    for fut in queued:
        with pytest.raises(LaneStopped, match="has stopped"):
            fut.result(5)
    assert parse_samples(metrics.render())['resnets_queue_depth{lane="lane"}'] == 0
