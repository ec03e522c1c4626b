"""The HTTP contract of ``resnets serve``, through an HTTP client against the app."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import struct
import tempfile
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.export.backends import resolve_backend
from resnets.export.sr import resolve_sr_backend
from resnets.serve.config import ServeConfig
from resnets.serve.metrics import parse_samples
from resnets.serve.models import ServedModels, load_models
from resnets.tasks.upscale import describe_inference, picture_from_image, to_pil, upscale_picture
from resnets.weights.sr import get_sr_model

from .conftest import FAST_SR, example, png


@pytest.fixture(scope="module")
def models() -> ServedModels:
    return load_models(ServeConfig(sr_model=FAST_SR))


@pytest.fixture
def client(models):
    from fastapi.testclient import TestClient

    from resnets.serve.app import create_app

    config = ServeConfig(max_upload_mb=1, max_pixels=1_000_000, max_output_pixels=600_000)
    with TestClient(create_app(config, models=models)) as c:
        yield c


async def _until(condition, timeout: float = 30.0) -> None:
    """Wait for ``condition()`` to hold; fail (not hang the run) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server's state"
        await asyncio.sleep(0.01)


def post(client, path: str, data: bytes, name: str = "x.png"):
    return client.post(path, files={"file": (name, data, "application/octet-stream")})


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 16) * 16)  # far fewer rows than declared
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


def test_healthz_and_models_describe_what_is_loaded(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/models").json()
    assert info["classifier"]["name"] == "resnet56"
    assert info["classifier"]["classes"][3] == "cat"
    assert info["classifier"]["preprocess"]["size"] == 32
    assert info["upscaler"]["scales"] == [2, 3, 4]
    assert info["upscaler"]["backend"] == resolve_sr_backend("auto")  # as upscale's default
    assert info["classifier"]["backend"] == resolve_backend("auto")  # as predict's default


def test_without_sr_model_the_server_loads_the_best_bundled_upscaler():
    """The other tests serve FAST_SR to save minutes; the server's own default is the
    upscaler ``upscale`` and ``sr-eval`` use (the best bundled record)."""
    served = load_models(ServeConfig(backend="torch", sr_backend="eager"))
    assert served.sr_label == get_sr_model()[1]
    assert served.describe()["upscaler"]["name"] == served.sr_label


def test_classify_returns_top_k_classes_with_probabilities(client):
    r = post(client, "/v1/classify", example("cat_0007.jpg"), "cat.jpg")
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "resnet56"
    assert [t["class"] for t in body["top"]][0] == "cat"
    probs = [t["probability"] for t in body["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    r3 = client.post("/v1/classify?top_k=3", files={"file": ("c.jpg", example(), "image/jpeg")})
    assert len(r3.json()["top"]) == 3
    form = client.post("/v1/classify", files={"file": ("c.jpg", example(), "image/jpeg")},
                       data={"top_k": "2"})
    assert len(form.json()["top"]) == 2


def test_batched_probabilities_equal_unbatched(models):
    from resnets.data.io import read_rgb
    from tests.serve.conftest import EXAMPLES

    images = [models.prepare(read_rgb(p)) for p in sorted(EXAMPLES.glob("*.jpg"))]
    batched = torch.stack(models.classify(images))
    alone = torch.stack([models.classify([img])[0] for img in images])
    assert batched.shape == (10, 10)
    assert (batched - alone).abs().max() <= 1e-5


def test_upscale_returns_a_png_scale_times_larger(client):
    for scale in (2, 4):
        r = client.post(f"/v1/upscale?scale={scale}",
                        files={"file": ("p.png", png(40, 30), "image/png")})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (40 * scale, 30 * scale)


def _pixels(png_bytes: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png_bytes))).astype(np.int16)


def test_served_upscale_equals_eager_pytorch_through_the_backend(client, models):
    """The upscaler runs through the backend ``auto`` picks (OpenVINO or onnxruntime where
    installed), tiled as served, and gives eager fp32's picture: the backends are float32
    rounding away from eager (max |diff| 1e-4, tests/export/test_sr.py), which can move a
    value across a rounding step, so a pixel may differ by one level, and rarely does."""
    kind = client.get("/v1/models").json()["upscaler"]["backend"]
    assert kind == describe_inference(models.sr_model)["backend"] == resolve_sr_backend("auto")
    eager, _ = get_sr_model(FAST_SR)
    picture = png(300, 200, seed=3)  # more than one 256-pixel tile
    for scale in (2, 3):
        r = post(client, f"/v1/upscale?scale={scale}", picture)
        assert r.status_code == 200
        pic = picture_from_image(Image.open(io.BytesIO(picture)))
        reference = to_pil(upscale_picture(eager, pic, scale, tile=ServeConfig().tile))
        served, expected = _pixels(r.content), np.asarray(reference).astype(np.int16)
        assert served.shape == expected.shape == (200 * scale, 300 * scale, 3)
        diff = np.abs(served - expected)
        assert diff.max() <= 1, (kind, scale)
        assert (diff > 0).mean() <= 1e-4, (kind, scale, (diff > 0).mean())  # 7e-6 measured


def test_the_upscaler_backend_is_the_configured_one(models):
    eager = load_models(ServeConfig(sr_model=FAST_SR, sr_backend="eager"))  # as upscale names it
    assert eager.describe()["upscaler"]["backend"] == "torch"
    picture = Image.open(io.BytesIO(png(40, 30, seed=4)))
    fast = _pixels(models.upscale_png(picture, 4, 256))
    assert np.abs(fast - _pixels(eager.upscale_png(picture, 4, 256))).max() <= 1
    with pytest.raises(ValueError, match="sr_backend must be one of auto, eager, torch"):
        ServeConfig(sr_backend="int8")


def test_cam_is_a_heat_map_the_size_of_the_picture(client):
    r = post(client, "/v1/cam", example(), "cat.jpg")
    assert r.status_code == 200 and r.headers["x-class"] == "cat"
    heat = Image.open(io.BytesIO(r.content))
    assert heat.mode == "RGBA" and heat.size == (32, 32)
    alpha = torch.from_numpy(np.asarray(heat.getchannel("A")).astype(np.int64))
    assert alpha.max() > 100 and alpha.min() < alpha.max()  # a map, not a flat wash


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"", 422, "empty"),
    (b"just some text, not a picture\n" * 3, 415, "not an image"),
    (png(64, 64)[:300], 422, "truncated or corrupt"),
    (bomb_png(), 422, "pixels"),
    (flat_png(1100, 1000), 422, "more than the limit of 1,000,000"),
])
def test_bad_uploads_get_a_one_line_json_error_and_the_server_keeps_serving(
        client, data, status, words):
    for path in ("/v1/classify", "/v1/upscale?scale=2", "/v1/cam"):
        r = post(client, path, data)
        assert r.status_code == status, (path, r.text)
        error = r.json()["error"]
        assert words in error and "\n" not in error and "Traceback" not in r.text
    assert client.get("/healthz").status_code == 200
    assert post(client, "/v1/classify", example()).status_code == 200


def test_wrong_scale_and_top_k_are_422(client):
    for query in ("scale=5", "scale=1", "scale=two"):
        r = post(client, f"/v1/upscale?{query}", png(16, 16))
        assert r.status_code == 422 and "scale" in r.json()["error"]
    assert post(client, "/v1/classify?top_k=0", example()).status_code == 422


def test_upscale_output_above_the_pixel_limit_is_refused(client):
    # 400x400 is under the 1 MP input limit, but x2 makes 640,000 > 600,000 output pixels
    r = post(client, "/v1/upscale?scale=2", png(400, 400))
    assert r.status_code == 422 and "at most 600,000" in r.json()["error"]
    assert post(client, "/v1/upscale?scale=2", png(380, 380)).status_code == 200


def test_upload_over_the_size_limit_is_413_and_nothing_is_written_to_disk(
        client, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a spooled upload would go
    big = b"\x00" * (3 * 1024 * 1024)
    r = post(client, "/v1/classify", big)
    assert r.status_code == 413 and "1 MB" in r.json()["error"]
    # a 0.9 MB upload under the limit is parsed in memory too (Starlette spools >1 MB)
    r = post(client, "/v1/classify", b"\x01" * (900 * 1024))
    assert r.status_code == 415
    assert list(tmp_path.iterdir()) == []


def test_not_multipart_is_415(client):
    r = client.post("/v1/classify", content=example(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]


def test_internal_errors_reach_the_client_without_a_stack_trace(models):
    from fastapi.testclient import TestClient

    from resnets.export.backends import Backend
    from resnets.serve.app import create_app

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("secret internal detail")

    run = Backend("torch", broken, models.run.input_size)
    bad = ServedModels(models.classifier, run, models.sr_model, models.sr_label)
    with TestClient(create_app(ServeConfig(), models=bad), raise_server_exceptions=False) as c:
        r = post(c, "/v1/classify", example())
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text and r.json()["error"]
        assert c.get("/healthz").status_code == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_fails_naming_a_lane_whose_worker_has_died(client):
    # a worker thread that ends (here its queue read fails) would leave every later request
    # on that lane waiting for ever, while /healthz answered ok
    lanes = client.app.state.lanes

    def broken() -> None:
        raise SystemExit

    assert client.get("/healthz").status_code == 200
    lanes.cam._collect = broken  # read by the worker once the job below is done
    lanes.cam.submit(lambda: None)
    deadline = time.monotonic() + 10
    while lanes.cam.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not lanes.cam.alive and lanes.classify.alive and lanes.upscale.alive
    r = client.get("/healthz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert "cam" in error and "classify" not in error and "\n" not in error
    r = post(client, "/v1/cam", example())  # refused at once, not left waiting
    assert r.status_code == 503 and "lane cam has stopped" in r.json()["error"]


def test_a_model_raising_system_exit_fails_its_batch_and_the_lane_runs_on(client):
    lanes = client.app.state.lanes

    def exits() -> None:
        raise SystemExit

    with pytest.raises(RuntimeError, match="cam: the model raised SystemExit"):
        lanes.cam.submit(exits).result(timeout=10)
    assert lanes.cam.alive and lanes.cam.submit(lambda: 7).result(timeout=10) == 7
    assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_errors_and_batch_sizes(client):
    post(client, "/v1/classify", example())
    post(client, "/v1/classify", b"")
    text = client.get("/metrics").text
    samples = parse_samples(text)
    assert samples['resnets_requests_total{route="/v1/classify",status="200"}'] == 1
    assert samples['resnets_requests_total{route="/v1/classify",status="422"}'] == 1
    assert samples['resnets_errors_total{route="/v1/classify",reason="bad_input"}'] == 1
    assert samples['resnets_batch_size_count{lane="classify"}'] == 1
    assert samples['resnets_request_duration_seconds_count{route="/v1/classify"}'] == 2
    assert "# TYPE resnets_request_duration_seconds histogram" in text


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert "/v1/classify" in html and "/v1/upscale" in html and "/v1/cam" in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


def _slow(run, delay: float):
    """``run`` (a backend) taking ``delay`` seconds more per call, to fill the queue."""
    from resnets.export.backends import Backend

    def fn(x: torch.Tensor) -> torch.Tensor:
        time.sleep(delay)
        return run(x)

    return Backend(run.kind, fn, run.input_size, input_dtype=run.input_dtype)


def test_a_full_queue_answers_503_with_retry_after(models):
    import httpx

    from resnets.serve.app import create_app

    slow = ServedModels(models.classifier, _slow(models.run, 0.3), models.sr_model,
                        models.sr_label)
    app = create_app(ServeConfig(queue_size=2, max_batch=1, batch_wait_ms=0), models=slow)
    data = example()

    async def burst() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as c:
                return await asyncio.gather(*[
                    c.post("/v1/classify", files={"file": ("c.jpg", data, "image/jpeg")})
                    for _ in range(10)])

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "queue is full" in r.json()["error"]
               for r in refused)
    # 1 running + 2 waiting at most get through the burst before the rest are refused
    assert codes.count(200) <= 4


def _example_inputs(models: ServedModels) -> list[torch.Tensor]:
    from resnets.data.io import read_rgb
    from tests.serve.conftest import EXAMPLES

    return [models.prepare(read_rgb(p)) for p in sorted(EXAMPLES.glob("*.jpg"))]


def test_inputs_queue_as_small_uint8_crops_the_backend_normalises(models):
    x = _example_inputs(models)[0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 32, 32)
    eager = models.classifier.model(models.classifier.preprocessing.normalize(x[None]))
    assert (models.classify([x])[0] - eager.softmax(1)[0]).abs().max() < 1e-4


@functools.cache
def _eager_classifier() -> ServedModels:
    return load_models(ServeConfig(sr_model=FAST_SR, sr_backend="eager", backend="eager"))


@pytest.mark.parametrize("backend", ["torch", "optimized", "onnxruntime", "openvino"])
def test_every_exact_backend_serves_eager_probabilities(models, backend):
    from .conftest import require

    require({"torch": "torch", "optimized": "torch"}.get(backend, backend))
    # the classifier is under test: the upscaler loads eagerly, with no conversion to wait on
    served = load_models(ServeConfig(sr_model=FAST_SR, sr_backend="eager", backend=backend))
    images = _example_inputs(models)
    ours = torch.stack(served.classify(images))
    eager = torch.stack(_eager_classifier().classify(images))
    assert served.describe()["classifier"]["backend"] == backend
    assert (ours - eager).abs().max() < 1e-4


def test_an_int8_backend_needs_calibration_images():
    with pytest.raises(ValueError, match="backend int8 needs calibration images: "
                                         "calibration must be a folder"):
        ServeConfig(backend="int8")
    with pytest.raises(ValueError, match="backend must be one of auto, int8, eager, torch"):
        ServeConfig(backend="tensorrt")


def test_the_int8_backend_serves_the_eager_top_class(models, tmp_path):
    """int8 calibrated on a folder of images (here the examples): the fastest int8 runtime
    installed, whose top-1 class matches fp32 eager on those images."""
    import shutil

    from tests.serve.conftest import EXAMPLES

    from .conftest import require

    require("onnxruntime")
    for p in sorted(EXAMPLES.glob("*.jpg")):
        shutil.copy(p, tmp_path / p.name)
    served = load_models(ServeConfig(sr_model=FAST_SR, backend="int8", calibration=str(tmp_path)))
    assert served.describe()["classifier"]["backend"] == resolve_backend("int8")
    images = _example_inputs(models)
    ours, eager = torch.stack(served.classify(images)), torch.stack(models.classify(images))
    assert (ours.argmax(1) == eager.argmax(1)).float().mean() >= 0.75
    assert (ours - eager).abs().max() < 0.3  # quantized: close, not equal (0.14 measured)


# --- what a server behind a load balancer meets: failures counted, clients that leave ---


@pytest.fixture(scope="module")
def torch_models() -> ServedModels:
    """The bundled models in eager PyTorch: nothing to convert, for tests that swap the
    classifier's runner or class names."""
    return load_models(ServeConfig(sr_model=FAST_SR, backend="torch", sr_backend="eager"))


def _with_run(models: ServedModels, fn) -> ServedModels:
    from resnets.export.backends import Backend

    run = Backend("torch", fn, models.run.input_size)
    return ServedModels(models.classifier, run, models.sr_model, models.sr_label)


def test_a_failed_request_is_counted_among_the_requests_by_status(torch_models):
    from fastapi.testclient import TestClient

    from resnets.serve.app import create_app

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("model failed")

    app = create_app(ServeConfig(), models=_with_run(torch_models, broken))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert post(c, "/v1/classify", example()).status_code == 500
        samples = parse_samples(c.get("/metrics").text)
    # an alert on the rate of 5xx answers must see it, and its latency too
    assert samples.get('resnets_requests_total{route="/v1/classify",status="500"}') == 1
    assert samples.get('resnets_request_duration_seconds_count{route="/v1/classify"}') == 1


def test_a_top_k_field_of_non_ascii_digits_is_422(torch_models):
    from fastapi.testclient import TestClient

    from resnets.serve.app import create_app

    with TestClient(create_app(ServeConfig(), models=torch_models),
                    raise_server_exceptions=False) as c:
        for text in ("²", "٣"):  # str.isdigit() says yes; int() refuses or reads 3
            r = c.post("/v1/classify", files={"file": ("c.jpg", example(), "image/jpeg")},
                       data={"top_k": text})
            assert r.status_code == 422 and "top_k" in r.json()["error"], r.text


def test_cam_names_a_class_outside_latin_1_in_its_header(torch_models):
    import dataclasses
    from urllib.parse import unquote

    from fastapi.testclient import TestClient

    from resnets.serve.app import create_app

    names = ["飛行機", "车", "bird", "猫 (ねこ) 100%", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    clf = dataclasses.replace(torch_models.classifier, classes=names)
    models = ServedModels(clf, torch_models.run, torch_models.sr_model, torch_models.sr_label)
    with TestClient(create_app(ServeConfig(), models=models),
                    raise_server_exceptions=False) as c:
        r = post(c, "/v1/cam", example(), "cat.jpg")
    assert r.status_code == 200, r.text
    assert r.headers["x-class"].isascii() and unquote(r.headers["x-class"]) == names[3]


def _asgi_post(app, path: str, files: dict, leave_after_s: float,
               cut_after: int | None = None):
    """POST through the ASGI interface as a client that closes its connection
    ``leave_after_s`` after sending the body (a timed-out load balancer, a closed tab), or
    after sending its first ``cut_after`` bytes (a client gone during the upload)."""
    import httpx

    request = httpx.Request("POST", f"http://t{path}", files=files)
    body = request.read()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 9),
             "server": ("t", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]}
    sent: list[dict] = []
    received = 0

    async def receive() -> dict:
        nonlocal received
        received += 1
        if received == 1 and cut_after is not None:
            return {"type": "http.request", "body": body[:cut_after], "more_body": True}
        if received == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(leave_after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def call() -> list[dict]:
        await app(scope, receive, send)
        return sent

    return call()


def test_a_request_whose_client_left_while_queued_never_reaches_the_model(torch_models):
    import threading

    import httpx

    from resnets.serve.app import create_app

    gate, calls = threading.Event(), []

    def held(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        gate.wait(30)
        return torch_models.run(x)

    app = create_app(ServeConfig(max_batch=1), models=_with_run(torch_models, held))
    files = {"file": ("c.jpg", example(), "image/jpeg")}

    async def scenario() -> tuple[int, bool, int]:
        async with app.router.lifespan_context(app):
            lane = app.state.lanes.classify
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as c:
                try:
                    stays = asyncio.ensure_future(c.post("/v1/classify", files=files))
                    await _until(lambda: calls)  # its batch is in the model, held at the gate
                    leaving = [asyncio.ensure_future(_asgi_post(app, "/v1/classify", files,
                                                                0.05)) for _ in range(2)]
                    await _until(lambda: lane._queue.qsize() >= 2)
                    # the two leave while queued: their handlers finish without the model
                    _, pending = await asyncio.wait(leaving, timeout=10)
                    left_in_time = not pending
                finally:
                    gate.set()
                first = (await stays).status_code
                await asyncio.gather(*leaving)
                last = (await c.post("/v1/classify", files=files)).status_code
                assert last == 200
                return first, left_in_time, len(calls)

    first, left_in_time, n_calls = asyncio.run(scenario())
    assert first == 200
    assert left_in_time, "a client that left waited for the model anyway"
    assert n_calls == 2, f"{n_calls} model calls for 2 clients that stayed"


def test_a_body_cut_off_before_its_closing_boundary_is_422(client):
    """A multipart body without its closing boundary (a cut-off upload) parses as far as it
    goes; its file part may be any prefix of the image, so it is refused, not decoded."""
    image = example()
    head = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    whole = client.post("/v1/classify", content=head + image + b"\r\n--xyz--\r\n",
                        headers=headers)
    assert whole.status_code == 200, whole.text
    for body in (head + image, head + image + b"\r\n--xyz", head + image[: len(image) // 2]):
        r = client.post("/v1/classify", content=body, headers=headers)
        assert r.status_code == 422 and "closing boundary" in r.json()["error"], r.text


# --- memory and overload: what a waiting or refused request costs ---


def _gate_lane(lane, gate, running) -> None:
    """Hold every batch of ``lane`` at ``gate`` (``running`` is set once one is held)."""
    fn = lane.fn

    def held(items):
        running.set()
        gate.wait(30)
        return fn(items)

    lane.fn = held


@pytest.mark.parametrize("path", ["/v1/classify", "/v1/cam", "/v1/upscale?scale=2"])
def test_a_queued_request_holds_neither_its_upload_nor_its_decoded_picture(
        torch_models, monkeypatch, path):
    """While a request waits in its lane it keeps only the model's input: the upload (up to
    max_upload_mb) and the full-size decoded picture are dropped before the wait."""
    import gc
    import threading
    import weakref

    import httpx

    from resnets.serve import app as app_module

    uploads, pictures = [], []
    read, decode = app_module.read_upload, app_module._decode_rgb

    async def read_upload(request, max_bytes):
        upload = await read(request, max_bytes)
        uploads.append(weakref.ref(upload))
        return upload

    def decode_rgb(data, max_pixels):
        image = decode(data, max_pixels)
        pictures.append(weakref.ref(image))
        return image

    monkeypatch.setattr(app_module, "read_upload", read_upload)
    monkeypatch.setattr(app_module, "_decode_rgb", decode_rgb)
    app = app_module.create_app(ServeConfig(max_batch=1), models=torch_models)
    files = {"file": ("p.png", png(64, 48), "image/png")}  # resized: not the model's input
    gate, running = threading.Event(), threading.Event()

    async def scenario() -> tuple[list[str], list[int]]:
        async with app.router.lifespan_context(app):
            lane = getattr(app.state.lanes, path.split("/")[2].split("?")[0])
            _gate_lane(lane, gate, running)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as c:
                try:
                    first = asyncio.ensure_future(c.post(path, files=files))
                    await _until(running.is_set)
                    second = asyncio.ensure_future(c.post(path, files=files))
                    # the second waits behind the first
                    await _until(lambda: lane._queue.qsize() >= 1)
                    gc.collect()
                    kept = (["upload"] if uploads[1]() is not None else []) + (
                        ["picture"] if pictures[1:] and pictures[1]() is not None else [])
                finally:
                    gate.set()
                return kept, [(await f).status_code for f in (first, second)]

    kept, codes = asyncio.run(scenario())
    assert codes == [200, 200]
    assert kept == [], f"a queued {path} request keeps its {' and '.join(kept)} alive"


def test_an_overloaded_lane_refuses_at_once_without_reading_or_decoding(
        torch_models, monkeypatch):
    """With every slot of a lane taken (queue_size waiting + max_batch running), a request
    is answered 503 with Retry-After before its body is read: overload costs no decoding."""
    import threading

    import httpx

    from resnets.serve import app as app_module

    decodes, decode = [], app_module._decode_rgb

    def decode_rgb(data, max_pixels):
        decodes.append(len(data))
        return decode(data, max_pixels)

    monkeypatch.setattr(app_module, "_decode_rgb", decode_rgb)
    app = app_module.create_app(ServeConfig(max_batch=1, queue_size=1), models=torch_models)
    files = {"file": ("c.jpg", example(), "image/jpeg")}
    gate, running = threading.Event(), threading.Event()

    async def scenario() -> list:
        async with app.router.lifespan_context(app):
            _gate_lane(app.state.lanes.classify, gate, running)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         timeout=60) as c:
                try:
                    posts = [asyncio.ensure_future(c.post("/v1/classify", files=files))]
                    await _until(running.is_set)  # the first runs: one slot left, to queue
                    posts += [asyncio.ensure_future(c.post("/v1/classify", files=files))
                              for _ in range(9)]
                    deadline = time.monotonic() + 20
                    while sum(p.done() for p in posts) < 8 and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                finally:
                    gate.set()
                return await asyncio.gather(*posts)

    answers = asyncio.run(scenario())
    assert len(decodes) == 2, f"{len(decodes)} uploads decoded for 2 free slots"
    assert sorted(r.status_code for r in answers) == [200] * 2 + [503] * 8
    assert all(r.headers["retry-after"] == "1" and "queue is full" in r.json()["error"]
               for r in answers if r.status_code == 503)


def test_a_client_that_leaves_during_the_upload_is_499_not_an_internal_error(
        torch_models, caplog):
    """Half a body, then the connection closes (starlette's ClientDisconnect): counted as
    a client that left, not as a 500 with a traceback in the log."""
    import httpx

    from resnets.serve.app import create_app

    app = create_app(ServeConfig(), models=torch_models)
    files = {"file": ("c.jpg", example(), "image/jpeg")}
    body = httpx.Request("POST", "http://t/v1/classify", files=files).read()

    async def scenario() -> str:
        async with app.router.lifespan_context(app):
            await _asgi_post(app, "/v1/classify", files, 0.0, cut_after=len(body) // 2)
            return app.state.metrics.render()

    with caplog.at_level(logging.INFO):
        samples = parse_samples(asyncio.run(scenario()))
    assert samples.get('resnets_requests_total{route="/v1/classify",status="499"}') == 1
    assert samples.get('resnets_errors_total{route="/v1/classify",reason="client_gone"}') == 1
    assert not [k for k in samples if 'status="500"' in k or 'reason="internal"' in k]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_a_cancelled_request_ends_in_cancelled_error_and_is_counted(torch_models):
    """The server cancels a request (its graceful-shutdown timeout ran out): the metrics
    middleware lets the CancelledError through and counts the request as unanswered."""
    import threading

    from resnets.serve.app import create_app

    gate, calls = threading.Event(), []

    def held(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        gate.wait(30)
        return torch_models.run(x)

    app = create_app(ServeConfig(), models=_with_run(torch_models, held))
    files = {"file": ("c.jpg", example(), "image/jpeg")}

    async def scenario() -> tuple[str, str]:
        async with app.router.lifespan_context(app):
            request = asyncio.ensure_future(_asgi_post(app, "/v1/classify", files, 60))
            try:
                await _until(lambda: calls)
                request.cancel()
                try:
                    await request
                    outcome = "answered"
                except asyncio.CancelledError:
                    outcome = "cancelled"
                except Exception as e:  # noqa: BLE001 (what replaced the cancellation)
                    outcome = type(e).__name__
            finally:
                gate.set()
            return outcome, app.state.metrics.render()

    outcome, text = asyncio.run(scenario())
    assert outcome == "cancelled"
    assert parse_samples(text).get(
        'resnets_requests_total{route="/v1/classify",status="499"}') == 1
