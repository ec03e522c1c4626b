"""Run the app under uvicorn: one process, or ``workers`` processes sharing the port.

The models are loaded once before uvicorn starts (errors are one line; converted graphs go to
the model cache). Each worker then loads its own and keeps no state between requests, so
more processes, or more machines behind any load balancer, scale it out. uvicorn handles
SIGTERM gracefully: it stops accepting connections and answers the requests in flight first,
for at most ``shutdown_timeout_s`` (then it cancels the ones left).
"""

from __future__ import annotations

import os

from .config import ServeConfig


def serve(config: ServeConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    from .app import CONFIG_ENV, create_app
    from .models import load_models

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


def warm_model_cache(config: ServeConfig) -> None:
    """Load the models once in a child process before the workers start: a wrong --model
    is one line (its error is raised here), and every converted or exported graph is in the
    model cache when the workers load, instead of each converting the same graphs at once.
    A child, not this process: uvicorn's supervisor, holding OpenVINO's runtime, crashed on
    SIGTERM (a segmentation fault that left its workers running)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_load, config.to_json()).result()


def _load(config_json: str) -> None:
    from .models import load_models

    load_models(ServeConfig.from_json(config_json))
