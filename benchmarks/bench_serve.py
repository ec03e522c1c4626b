"""`resnets serve` under load: requests/s and latency at 1, 4 and 16 concurrent clients,
with and without micro-batching, for each classifier backend in ``--backends``, against
running `resnets predict` once per image (issue 19).

Each setting starts its own server on 127.0.0.1 (bundled ResNet-56, `/v1/classify` with the
sample images), lets ``--clients`` threads post back-to-back for ``--seconds``, and reads the
mean batch size from `/metrics`. "Without micro-batching" is `--max-batch 1`; micro-batching
runs at each ``--batch-wait-ms``. The baseline is
`resnets predict IMAGE` as a new process per image: what a script calling the CLI pays.

Run on a quiet machine (numbers on a busy one say little):

    .venv/bin/python benchmarks/bench_serve.py --threads 2 --seconds 20 --out bench-serve.json
    .venv/bin/python benchmarks/bench_serve.py --backends auto,torch --batch-wait-ms 0,5
    .venv/bin/python benchmarks/bench_serve.py --batch-wait-ms 0,5 --batch-wait-modes adaptive,fixed
    .venv/bin/python benchmarks/bench_serve.py --smoke     # seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from resnets.serve.loadgen import run_load

IMAGES = sorted((Path(__file__).resolve().parents[1] / "examples" / "images").glob("*.jpg"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int, batching: bool, backend: str = "auto", wait_ms: float = 5.0,
                 mode: str = "adaptive") -> tuple[subprocess.Popen, str]:
    port = free_port()
    flags = ["--max-batch", "32", "--batch-wait-ms", str(wait_ms), "--batch-wait-mode", mode] \
        if batching else ["--max-batch", "1", "--batch-wait-ms", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", "--port", str(port),
                             "--queue-size", "256", "--backend", backend, *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the server did not start in 2 minutes")


def load(url: str, clients: int, seconds: float) -> dict:
    """``clients`` threads posting back-to-back for ``seconds``."""
    pictures = [p.read_bytes() for p in IMAGES]
    with httpx.Client(base_url=url, timeout=60) as c:  # warm-up
        c.post("/v1/classify", files={"file": ("x.jpg", pictures[0], "image/jpeg")})
    return run_load(url, pictures, clients, seconds).summary()


def predict_per_image(runs: int, threads: int) -> dict:
    """`resnets predict IMAGE` as one process per image."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times = []
    for i in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "resnets", "predict", str(IMAGES[i % len(IMAGES)]),
                        "--json"], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"runs": runs, "seconds_per_image": round(statistics.median(times), 3),
            "images_per_s": round(1 / statistics.median(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--backends", default="auto",
                        help="classifier backends to compare, e.g. auto,torch")
    parser.add_argument("--batch-wait-ms", default="0",
                        help="how long a micro-batch waits to fill; several to compare, "
                             "e.g. 0,5")
    parser.add_argument("--batch-wait-modes", default="adaptive",
                        help="adaptive and/or fixed (serve's --batch-wait-mode), for each "
                             "wait above 0")
    parser.add_argument("--predict-runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="2 s per setting, 1 predict run")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.predict_runs = 2.0, 1
    clients = [int(c) for c in args.clients.split(",")]
    results: dict = {"settings": vars(args), "serve": []}
    waits = [float(w) for w in args.batch_wait_ms.split(",")]
    modes = args.batch_wait_modes.split(",")
    # with no wait the two modes are the same server: run it once
    settings = [(b, True, w, m) for b in args.backends.split(",") for w in waits
                for m in (modes if w > 0 else modes[:1])]
    settings += [(b, False, 0.0, modes[0]) for b in args.backends.split(",")]
    for backend, batching, wait_ms, mode in settings:
        proc, url = start_server(args.threads, batching, backend, wait_ms, mode)
        try:
            served = httpx.get(f"{url}/v1/models").json()["classifier"]["backend"]
            for n in clients:
                row = {"backend": served, "batching": batching, "batch_wait_ms": wait_ms,
                       "batch_wait_mode": mode if batching and wait_ms > 0 else None,
                       **load(url, n, args.seconds)}
                print(json.dumps(row), flush=True)
                results["serve"].append(row)
        finally:
            proc.terminate()
            proc.wait(60)
    results["predict_per_image"] = predict_per_image(args.predict_runs, args.threads)
    print(json.dumps({"predict_per_image": results["predict_per_image"]}))
    if args.out:
        from resnets.files import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
