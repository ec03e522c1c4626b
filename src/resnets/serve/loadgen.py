"""A bounded load generator for a running server: ``clients`` threads post pictures to
``/v1/classify`` back to back for ``seconds``, and the server's ``/metrics`` say how the
requests were batched. Used by the load test and by ``benchmarks/bench_serve.py``; only
ever pointed at a server of one's own (127.0.0.1 in both)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .metrics import parse_samples

BATCH_SUM = 'resnets_batch_size_sum{lane="classify"}'
BATCH_COUNT = 'resnets_batch_size_count{lane="classify"}'


@dataclass
class LoadResult:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "STATUS first 100 chars of the body"
    mean_batch: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # /metrics after the run

    def summary(self) -> dict:
        cuts = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 \
            else self.latencies * 99
        return {"clients": self.clients, "seconds": round(self.seconds, 1),
                "requests": len(self.latencies), "errors": len(self.failures),
                "requests_per_s": round(len(self.latencies) / max(self.seconds, 1e-9), 1),
                "p50_ms": round(cuts[49] * 1000, 1) if cuts else None,
                "p99_ms": round(cuts[98] * 1000, 1) if cuts else None,
                "mean_batch": round(self.mean_batch, 2)}


def run_load(url: str, pictures: Sequence[bytes], clients: int, seconds: float,
             timeout: float = 60.0) -> LoadResult:
    """Post ``pictures`` (round robin) from ``clients`` threads for ``seconds``."""
    import httpx

    before = parse_samples(httpx.get(f"{url}/metrics", timeout=timeout).text)
    result = LoadResult(clients, 0.0)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as c:
            n = i
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                r = c.post("/v1/classify", files={"file": ("x.jpg", pictures[n % len(pictures)],
                                                           "image/jpeg")})
                took = time.perf_counter() - start
                with lock:
                    result.latencies.append(took)
                    if r.status_code != 200:
                        result.failures.append(f"{r.status_code} {r.text[:100]}")
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - began
    after = parse_samples(httpx.get(f"{url}/metrics", timeout=timeout).text)
    batches = after.get(BATCH_COUNT, 0) - before.get(BATCH_COUNT, 0)
    result.mean_batch = (after.get(BATCH_SUM, 0) - before.get(BATCH_SUM, 0)) / max(batches, 1)
    result.metrics = after
    return result
