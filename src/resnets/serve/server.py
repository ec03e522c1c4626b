"""Run the app under uvicorn: one process, or ``workers`` processes sharing the port.

Each worker loads its own models and keeps no state between requests, so more processes,
or more machines behind any load balancer, scale it out. uvicorn handles SIGTERM
gracefully: it stops accepting connections and answers the requests in flight first.
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
    if config.workers == 1:
        # loaded here, before uvicorn starts, so a wrong --model is one line from the CLI
        uvicorn.run(create_app(config, models=load_models(config)), **options)
        return
    os.environ[CONFIG_ENV] = config.to_json()  # workers are new processes: they read it here
    uvicorn.run("resnets.serve.app:app_from_env", factory=True, workers=config.workers,
                **options)
