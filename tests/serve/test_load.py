"""A bounded load test on 127.0.0.1: 16 clients for 20 s against one server process.

About 30 s in all, so it runs in ``make test`` (not marked slow). ``pytest -s`` prints the
throughput and latency it measured.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import httpx

from resnets.serve.metrics import parse_samples

from .conftest import EXAMPLES

CLIENTS = 16
SECONDS = 20.0


def test_sixteen_clients_get_no_errors_and_share_batches(server_factory, tmp_path):
    server = server_factory("--queue-size", "64", "--max-batch", "32", "--batch-wait-ms", "5")
    pictures = [p.read_bytes() for p in sorted(EXAMPLES.glob("*.jpg"))]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS

    def client(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            n = i
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                r = c.post("/v1/classify", files={"file": ("x.jpg", pictures[n % 10],
                                                           "image/jpeg")})
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:100]}")
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    samples = parse_samples(httpx.get(f"{server.url}/metrics").text)
    batches = samples['resnets_batch_size_count{lane="classify"}']
    mean_batch = samples['resnets_batch_size_sum{lane="classify"}'] / batches
    cuts = statistics.quantiles(latencies, n=100)
    record = {"clients": CLIENTS, "seconds": round(wall, 1), "requests": len(latencies),
              "requests_per_s": round(len(latencies) / wall, 1),
              "p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1),
              "mean_batch": round(mean_batch, 2), "errors": len(failures)}
    print("load test:", json.dumps(record))
    (tmp_path / "load.json").write_text(json.dumps(record))
    assert failures == []
    assert len(latencies) >= CLIENTS
    assert samples.get('resnets_errors_total{route="/v1/classify",reason="queue_full"}', 0) == 0
    assert mean_batch > 1, record
