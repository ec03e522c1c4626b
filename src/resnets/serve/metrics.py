"""Prometheus text exposition, written by hand: counters and histograms with labels.

Small enough not to need ``prometheus_client``: one lock, dictionaries of numbers, and a
renderer for text format 0.0.4. Each server process keeps its own numbers (a scraper adds
the processes up).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets, a sum and a count for one label set."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """The server's numbers: requests, latencies, batch sizes, errors, queue depth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[Labels, int] = defaultdict(int)
        self.errors: dict[Labels, int] = defaultdict(int)
        self.latency: dict[Labels, Histogram] = {}
        self.batch_size: dict[Labels, Histogram] = {}
        self.queue_depth: dict[Labels, int] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("route", route), ("status", str(status)))] += 1
            key = (("route", route),)
            self.latency.setdefault(key, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_error(self, route: str, reason: str) -> None:
        with self._lock:
            self.errors[(("route", route), ("reason", reason))] += 1

    def observe_batch(self, lane: str, size: int) -> None:
        with self._lock:
            key = (("lane", lane),)
            self.batch_size.setdefault(key, Histogram(BATCH_BUCKETS)).observe(size)

    def set_queue_depth(self, lane: str, depth: int) -> None:
        with self._lock:
            self.queue_depth[(("lane", lane),)] = depth

    def render(self) -> str:
        """The Prometheus text format."""
        out: list[str] = []
        with self._lock:
            _counter(out, "resnets_requests_total", "HTTP requests by route and status.",
                     self.requests)
            _counter(out, "resnets_errors_total", "Refused or failed requests by reason.",
                     self.errors)
            _histograms(out, "resnets_request_duration_seconds",
                        "Request latency from arrival to response.", self.latency)
            _histograms(out, "resnets_batch_size", "Images per model call.", self.batch_size)
            out.append("# HELP resnets_queue_depth Requests waiting for a model.")
            out.append("# TYPE resnets_queue_depth gauge")
            for labels, value in sorted(self.queue_depth.items()):
                out.append(f"resnets_queue_depth{_fmt(labels)} {value}")
        return "\n".join(out) + "\n"


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


def _counter(out: list[str], name: str, help_: str, values: dict[Labels, int]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} counter")
    for labels, value in sorted(values.items()):
        out.append(f"{name}{_fmt(labels)} {value}")


def _histograms(out: list[str], name: str, help_: str, hists: dict[Labels, Histogram]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} histogram")
    for labels, h in sorted(hists.items()):
        running = 0
        for bound, n in zip(h.buckets, h.counts, strict=True):
            running += n
            out.append(f"{name}_bucket{_fmt(labels + (('le', _number(bound)),))} {running}")
        out.append(f"{name}_bucket{_fmt(labels + (('le', '+Inf'),))} {h.count}")
        out.append(f"{name}_sum{_fmt(labels)} {_number(h.sum)}")
        out.append(f"{name}_count{_fmt(labels)} {h.count}")


def parse_samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line (for tests and the benchmark)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples
