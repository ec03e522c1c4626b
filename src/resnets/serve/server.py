"""Run the app under uvicorn: one process, or ``workers`` processes sharing the port.

The models are loaded once before uvicorn starts (errors are one line; converted graphs go to
the model cache). Each worker then loads its own and keeps no state between requests, so
more processes, or more machines behind any load balancer, scale it out. uvicorn handles
SIGTERM gracefully: it stops accepting connections and answers the requests in flight first,
for at most ``shutdown_timeout_s`` (then it cancels the ones left).

Before anything loads, the address is bound once and let go (:func:`check_can_listen`): a
port in use or an unknown host is one line at once, not uvicorn's log after the models.
"""

from __future__ import annotations

import errno
import os
import socket

from .config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    from .app import CONFIG_ENV, create_app
    from .models import load_models

    check_can_listen(config.host, config.port, config.workers)
    options = {"host": config.host, "port": config.port, "log_level": "info",
               "timeout_graceful_shutdown": config.shutdown_timeout_s}
    if config.workers == 1:
        # loaded here, before uvicorn starts, so a wrong --model is one line from the CLI
        uvicorn.run(create_app(config, models=load_models(config)), **options)
        return
    warm_model_cache(config)
    os.environ[CONFIG_ENV] = config.to_json()  # workers are new processes: they read it here
    uvicorn.run("resnets.serve.app:app_from_env", factory=True, workers=config.workers,
                **options)


def check_can_listen(host: str, port: int, workers: int = 1) -> None:
    """Bind ``host:port`` as uvicorn will, then let it go: an OSError of one line naming the
    address when that fails. Models take seconds to load and uvicorn binds after them, then
    logs the failure over several lines and exits 3. (Another process may still take the
    port in between; uvicorn's own error is left for that.)

    uvicorn binds with SO_REUSEADDR: one process through asyncio's ``create_server`` (every
    address the host resolves to, IPv6 ones v6-only), ``workers`` processes through one
    socket of the host's family (IPv6 when the host holds a ':')."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if workers == 1:
        family = socket.AF_UNSPEC
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(host or None, port, family, socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {where}: unknown host (expected "
                      "an IP address or a name this machine resolves)") from None
    for af, kind, proto, _, address in dict.fromkeys(found):
        with socket.socket(af, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if af == socket.AF_INET6 and workers == 1:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {where}: {_why(e)}") from None


def _why(e: OSError) -> str:
    """Why a bind failed, with what to do about it."""
    if e.errno == errno.EADDRINUSE:
        return "address already in use (another server? choose another port)"
    if e.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine (expected one of its own, or 0.0.0.0 for all)"
    if e.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges; choose a higher one)"
    return e.strerror or str(e)


def warm_model_cache(config: ServeConfig) -> None:
    """Load the models once in a child process before the workers start: a wrong --model
    is one line (its error is raised here), and every converted or exported graph is in the
    model cache when the workers load, instead of each converting the same graphs at once.
    A child, not this process: uvicorn's supervisor, holding OpenVINO's runtime, crashed on
    SIGTERM (a segmentation fault that left its workers running)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=die_with_parent) as pool:
        pool.submit(_load, config.to_json()).result()


def die_with_parent() -> None:
    """In a child: be sent SIGTERM when the parent dies (Linux). A server stopped by
    SIGTERM while its models were still loading left the loading child running on."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _load(config_json: str) -> None:
    from .models import load_models

    load_models(ServeConfig.from_json(config_json))
