"""Micro-batching: requests that arrive together share a model call; a full queue refuses."""

from __future__ import annotations

import threading
import time

import pytest

from resnets.serve.batcher import MicroBatcher, QueueFull
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
    gate = threading.Event()
    batcher = MicroBatcher(lambda items: [gate.wait(5) for _ in items], "t", max_batch=1,
                           wait_s=0, queue_size=2)
    first = batcher.submit(0)
    time.sleep(0.2)  # the worker holds the first item; two more fill the queue
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
