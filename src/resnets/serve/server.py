"""Run the app under uvicorn: one process, or ``workers`` processes sharing the port.

The models are loaded once before uvicorn starts (errors are one line; converted graphs go to
the model cache). Each worker then loads its own and keeps no state between requests, so
more processes, or more machines behind any load balancer, scale it out. uvicorn handles
SIGTERM gracefully: it stops accepting connections and answers the requests in flight first.
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
               "timeout_graceful_shutdown": None}
    # loaded here, before uvicorn starts, so a wrong --model is one line from the CLI
    models = load_models(config)
    if config.workers == 1:
        uvicorn.run(create_app(config, models=models), **options)
        return
    # the workers load their own; this load left every converted or exported graph in the
    # model cache, so they read it instead of each converting the same graphs at once
    del models
    os.environ[CONFIG_ENV] = config.to_json()  # workers are new processes: they read it here
    uvicorn.run("resnets.serve.app:app_from_env", factory=True, workers=config.workers,
                **options)
