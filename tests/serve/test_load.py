"""A bounded load test on 127.0.0.1: 16 clients for 10 s against one server process.

About 15 s in all, so it runs in ``make test`` (not marked slow). ``pytest -s`` prints the
throughput and latency it measured.
"""

from __future__ import annotations

import json

from resnets.serve.loadgen import run_load

from .conftest import EXAMPLES

CLIENTS = 16
SECONDS = 10.0


def test_sixteen_clients_get_no_errors_and_share_batches(server_factory, tmp_path):
    """With the defaults (no batching window): requests that queue while a batch runs form
    the next one."""
    server = server_factory("--queue-size", "64", "--max-batch", "32")
    pictures = [p.read_bytes() for p in sorted(EXAMPLES.glob("*.jpg"))]
    result = run_load(server.url, pictures, CLIENTS, SECONDS)
    record = result.summary()
    print("load test:", json.dumps(record))
    (tmp_path / "load.json").write_text(json.dumps(record))
    assert result.failures == []
    assert len(result.latencies) >= CLIENTS
    assert result.metrics.get(
        'resnets_errors_total{route="/v1/classify",reason="queue_full"}', 0) == 0
    assert result.mean_batch > 1, record
