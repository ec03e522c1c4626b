"""``resnets serve``: an HTTP API and a web page for classify, Grad-CAM and upscale.

``config`` (settings), ``models`` (what is served), ``images`` (uploads to pictures, with
limits), ``batcher`` (dynamic micro-batching on a worker thread), ``metrics`` (Prometheus
text), ``app`` (the FastAPI routes), ``server`` (uvicorn). Only ``app`` and ``server`` need
the ``serve`` extra (FastAPI, uvicorn).
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
