"""The HTTP API and the web page (FastAPI).

``create_app(config)`` loads the models at start-up (``/healthz`` answers once they are
loaded), runs the classifier through a micro-batching lane and Grad-CAM and upscaling
through lanes of one, and answers every refusal as JSON ``{"error": one line}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import quote

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..data.io import image_tensor
from .batcher import LaneStopped, MicroBatcher, QueueFull
from .config import ServeConfig
from .images import ImageRejected, check_upscale_size, decode_image
from .metrics import Metrics
from .models import ServedModels, load_models
from .uploads import read_upload

log = logging.getLogger("resnets.serve")
CONFIG_ENV = "RESNETS_SERVE_CONFIG"  # how `resnets serve --workers N` hands config to workers


class Lanes:
    """The worker threads: classify (micro-batched), cam and upscale (one at a time)."""

    def __init__(self, models: ServedModels, config: ServeConfig, metrics: Metrics) -> None:
        def one_at_a_time(jobs: list) -> list:
            return [job() for job in jobs]

        self.classify = MicroBatcher(models.classify, "classify", config.max_batch,
                                     config.batch_wait_ms / 1000, config.queue_size, metrics,
                                     adaptive=config.batch_wait_mode == "adaptive")
        self.cam = MicroBatcher(one_at_a_time, "cam", 1, 0.0, config.queue_size, metrics)
        self.upscale = MicroBatcher(one_at_a_time, "upscale", 1, 0.0, config.queue_size,
                                    metrics)

    def all(self) -> tuple[MicroBatcher, ...]:
        return self.classify, self.cam, self.upscale

    def close(self) -> None:
        for lane in self.all():
            lane.close()


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def create_app(config: ServeConfig | None = None, models: ServedModels | None = None
               ) -> FastAPI:
    """The ASGI app; ``models`` skips loading (tests pass their own)."""
    config = config or ServeConfig()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = models if models is not None else await run_in_threadpool(load_models, config)
        app.state.models = served
        app.state.lanes = Lanes(served, config, metrics)
        log.info("serving %s (%s) and %s", served.classifier.name, served.run.kind,
                 served.sr_label)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.lanes.close)

    app = FastAPI(title="resnets serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config = config
    app.state.metrics = metrics

    @app.middleware("http")
    async def measure(request: Request, call_next):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        status = 499  # unless answered: cancelled (a graceful shutdown ran out of time)
        try:
            response = await call_next(request)
        except Exception:  # answered 500 by the handler below, outside this middleware
            status = 500
            raise
        else:
            status = response.status_code
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.observe_request(route, status, time.perf_counter() - start)
        return response

    def route_of(request: Request) -> str:
        return getattr(request.scope.get("route"), "path", request.url.path)

    @app.exception_handler(ImageRejected)
    async def rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        metrics.observe_error(route_of(request), {413: "too_large", 415: "not_an_image"}
                              .get(exc.status, "bad_input"))
        return _error(exc.status, exc.reason)

    @app.exception_handler(LaneStopped)
    async def lane_stopped(request: Request, exc: LaneStopped) -> JSONResponse:
        metrics.observe_error(route_of(request), "lane_stopped")
        return _error(503, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        metrics.observe_error(route_of(request), "queue_full")
        return _error(503, f"{exc}; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(ClientGone)  # while queued
    @app.exception_handler(ClientDisconnect)  # during the upload (starlette's)
    async def client_gone(request: Request, exc: Exception) -> JSONResponse:
        metrics.observe_error(route_of(request), "client_gone")
        # nobody reads it; the status is for the metrics
        return _error(499, str(exc) or "the client closed the connection during the upload")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.observe_error(route_of(request), "bad_input")
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).splitlines()[0], exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error in %s", request.url.path)
        metrics.observe_error(route_of(request), "internal")
        return _error(500, "internal error (details are in the server log)")

    @app.get("/healthz")
    async def healthz(request: Request) -> Any:
        dead = [lane.name for lane in request.app.state.lanes.all() if not lane.alive]
        if dead:  # its requests would wait for ever: take this server out of rotation
            return _error(503, f"the worker thread of lane {', '.join(dead)} has stopped; "
                               "restart the server")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        return request.app.state.models.describe()

    @app.post("/v1/classify")
    async def classify(request: Request, top_k: int | None = Query(None, ge=1)) -> dict:
        served: ServedModels = request.app.state.models
        lane: MicroBatcher = request.app.state.lanes.classify
        with lane.reserve():  # before the upload is read: a full lane costs nothing
            upload = await read_upload(request, config.max_upload_bytes)
            k = top_k if top_k is not None else _form_int(upload.fields, "top_k", 5)
            image = await run_in_threadpool(_decode_rgb, upload.file, config.max_pixels)
            del upload  # a queued request holds the small input only
            x = await run_in_threadpool(served.prepare, image)
            del image
            probs = await _run_while_connected(request, lane, x)
        values, idx = probs.topk(min(k, len(served.classifier.classes)))
        top = [{"class": served.classifier.classes[i], "probability": v}
               for i, v in zip(idx.tolist(), values.tolist(), strict=True)]
        return {"top": top, "model": served.classifier.name}

    @app.post("/v1/cam")
    async def cam(request: Request) -> Response:
        served: ServedModels = request.app.state.models
        lane: MicroBatcher = request.app.state.lanes.cam
        with lane.reserve():
            upload = await read_upload(request, config.max_upload_bytes)
            image = await run_in_threadpool(_decode_rgb, upload.file, config.max_pixels)
            del upload  # a queued request holds the small input only
            x, (height, width) = await run_in_threadpool(served.prepare, image), image.shape[-2:]
            del image
            png, target = await _run_while_connected(
                request, lane, lambda: served.cam_png(x, height, width))
        return Response(png, media_type="image/png",
                        headers={"X-Class": _header_text(served.classifier.classes[target])})

    @app.post("/v1/upscale")
    async def upscale(request: Request, scale: int = Query(2)) -> Response:
        served: ServedModels = request.app.state.models
        if scale not in served.scales:
            raise ImageRejected(422, f"scale must be one of {served.scales}, got {scale}")

        def check(img: Image.Image) -> None:
            check_upscale_size(img, scale, config.max_output_pixels)

        lane: MicroBatcher = request.app.state.lanes.upscale
        with lane.reserve():
            upload = await read_upload(request, config.max_upload_bytes)
            img = await run_in_threadpool(decode_image, upload.file, config.max_pixels, check)
            del upload  # a queued request holds the picture only (the model's input)
            png = await _run_while_connected(
                request, lane, lambda: served.upscale_png(img, scale, config.tile))
        return Response(png, media_type="image/png")

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("page.html").read_text())

    return app


class ClientGone(Exception):
    """The client closed its connection while its request waited for a model."""


async def _run_while_connected(request: Request, lane: MicroBatcher, item: Any) -> Any:
    """``lane.run(item)``, unless the client disconnects while the item is queued: then
    the item is taken out of the queue (:class:`ClientGone`), so that a request a load
    balancer or a browser gave up on costs no model run. An item already running runs on."""
    work = asyncio.ensure_future(lane.run(item))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        gone.cancel()
    if not work.done():  # the client left first
        work.cancel()  # takes the item out of the queue; one already running runs on
        await asyncio.wait({work})
    if work.cancelled():
        raise ClientGone("the client closed the connection before the answer")
    return work.result()


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body has been read: the server's next
    message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# printable ASCII but "%": names in it (every bundled class name) are sent as they are
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _header_text(text: str) -> str:
    """``text`` as an HTTP header value: HTTP headers are Latin-1 bytes, so anything
    outside printable ASCII (and "%") is percent-encoded UTF-8 (JavaScript's
    ``decodeURIComponent``, Python's ``urllib.parse.unquote``)."""
    return quote(text, safe=_HEADER_SAFE)


def _decode_rgb(data: bytes, max_pixels: int) -> torch.Tensor:
    return image_tensor(decode_image(data, max_pixels))


def _form_int(fields: dict[str, str], name: str, default: int) -> int:
    if name not in fields:
        return default
    text = fields[name].strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ImageRejected(422, f"{name} must be a whole number >= 1, got {text!r}")
    return int(text)


def app_from_env() -> FastAPI:
    """The app with the config ``resnets serve`` put in the environment (uvicorn workers)."""
    text = os.environ.get(CONFIG_ENV)
    return create_app(ServeConfig.from_json(text) if text else ServeConfig())
