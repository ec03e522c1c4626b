import pytest
import torch

from resnets.export import BACKENDS, load_backend
from tests.export.conftest import CIFAR_SIZE, randomize_bn


@pytest.mark.parametrize("kind", ["eager", "torch", "optimized", "bf16"])
def test_torch_backends_return_float32_logits_close_to_eager(resnet20, kind):
    backend = load_backend(kind, resnet20, input_size=CIFAR_SIZE)
    x = torch.randn(4, 3, 32, 32)
    out = backend(x)
    with torch.no_grad():
        ref = resnet20(x)
    assert out.dtype == torch.float32 and out.shape == (4, 10)
    tolerance = 0.05 * ref.abs().max() if kind == "bf16" else 1e-5
    assert (out - ref).abs().max() <= tolerance


def test_registry_name_with_weights_gives_the_weights_model(tmp_path):
    import resnets
    from resnets.export import export_model

    model = resnets.create_model("resnet20", num_classes=3).eval()
    weights = tmp_path / "w.safetensors"
    export_model(model, weights, "safetensors", CIFAR_SIZE, name="resnet20")
    backend = load_backend("optimized", "resnet20", weights=weights)
    assert backend.input_size == CIFAR_SIZE
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (backend(x) - model(x)).abs().max() <= 1e-5


def test_onnxruntime_backend_matches_pytorch_at_another_size():
    from resnets.models.cifar import cifar_resnet

    model = randomize_bn(cifar_resnet(8))
    backend = load_backend("onnxruntime", model, input_size=CIFAR_SIZE, threads=1)
    assert backend.details["max_abs_diff"] <= 1e-4
    x = torch.randn(2, 3, 36, 30)
    with torch.no_grad():
        assert (backend(x) - model(x)).abs().max() <= 1e-4


def test_unknown_backend_lists_the_known_ones(resnet20):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt': expected one of auto, int8, "
                                         "eager, " + ", ".join(BACKENDS)):
        load_backend("tensorrt", resnet20, input_size=CIFAR_SIZE)


def test_module_without_input_size_is_asked_for_one(resnet20):
    with pytest.raises(ValueError, match="input_size is needed"):
        load_backend("onnxruntime", resnet20)


@pytest.mark.parametrize("kind", ["openvino", "openvino-int8"])
def test_openvino_backend_without_the_extra_names_what_to_install(resnet20, monkeypatch, kind):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    calibration = torch.zeros(2, *CIFAR_SIZE)
    with pytest.raises(ValueError, match=r"openvino is not installed: pip install "
                                         r"'resnets\[openvino\]'"):
        load_backend(kind, resnet20, input_size=CIFAR_SIZE, calibration=calibration)


@pytest.mark.parametrize(("present", "expected"), [
    ({"openvino", "onnxruntime", "onnx"}, "openvino"),
    ({"onnxruntime", "onnx"}, "onnxruntime"),
    ({"onnxruntime"}, "optimized"),  # onnxruntime alone cannot export the graph
    (set(), "optimized"),
])
def test_auto_picks_the_fastest_exact_backend_installed(monkeypatch, present, expected):
    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: module in present)
    assert backends.fastest_exact_backend() == expected
    assert backends.resolve_backend("auto") == expected
    assert backends.resolve_backend("auto", "cuda") == "torch"
    assert backends.resolve_backend("eager") == "torch"


@pytest.mark.parametrize(("present", "expected"), [
    ({"openvino", "nncf", "onnxruntime", "onnx"}, "openvino-int8"),
    ({"openvino", "nncf"}, "openvino-int8"),
    ({"openvino", "onnxruntime", "onnx"}, "onnxruntime-int8"),  # NNCF quantizes for OpenVINO
    ({"onnxruntime", "onnx"}, "onnxruntime-int8"),
    (set(), "onnxruntime-int8"),  # whose error names the extra to install
])
def test_int8_picks_the_fastest_int8_backend_installed(monkeypatch, present, expected):
    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: module in present)
    assert backends.fastest_int8_backend() == expected
    assert backends.resolve_backend("int8") == expected
    assert backends.resolve_backend("int8", "cuda") == expected  # int8 runs on the CPU
    assert backends.resolve_backend("onnxruntime-int8") == "onnxruntime-int8"


def test_int8_backend_names_the_runtime_it_resolved_to(resnet20, monkeypatch):
    pytest.importorskip("onnxruntime")
    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: module in {"onnxruntime",
                                                                          "onnx"})
    backend = load_backend("int8", resnet20, input_size=CIFAR_SIZE, threads=1,
                           calibration=torch.randn(4, *CIFAR_SIZE))
    assert backend.kind == "onnxruntime-int8" and backend.details["cached"] is False


def test_int8_without_any_runtime_names_the_extra_to_install(resnet20, monkeypatch):
    import sys

    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ValueError, match=r"onnxruntime is not installed: pip install "
                                         r"'resnets\[onnx\]'"):
        load_backend("int8", resnet20, input_size=CIFAR_SIZE,
                     calibration=torch.randn(2, *CIFAR_SIZE))


def test_auto_backend_with_nothing_extra_is_exact_pytorch(resnet20, monkeypatch):
    from resnets.export import backends

    monkeypatch.setattr(backends, "installed", lambda module: False)
    backend = load_backend("auto", resnet20, input_size=CIFAR_SIZE)
    x = torch.randn(2, *CIFAR_SIZE)
    assert backend.kind == "optimized"
    torch.testing.assert_close(backend(x), resnet20(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["torch", "optimized", "onnxruntime"])
def test_uint8_input_backend_normalises_like_preprocessing(resnet20, kind):
    from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD, cifar_default

    if kind == "onnxruntime":
        pytest.importorskip("onnxruntime")
    images = torch.randint(0, 256, (3, *CIFAR_SIZE), dtype=torch.uint8)
    float_in = load_backend(kind, resnet20, input_size=CIFAR_SIZE)
    uint8_in = load_backend(kind, resnet20, input_size=CIFAR_SIZE, uint8_input=True,
                            normalization=(CIFAR_MEAN, CIFAR_STD))
    assert float_in.input_dtype == torch.float32 and uint8_in.input_dtype == torch.uint8
    expected = float_in(cifar_default().normalize(images))
    torch.testing.assert_close(uint8_in(images), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="takes uint8 images .* got float32"):
        uint8_in(images.float())


def test_map_gives_each_batch_its_own_output_in_order(resnet20):
    backend = load_backend("torch", resnet20, input_size=CIFAR_SIZE)
    batches = [torch.randn(n, *CIFAR_SIZE) for n in (3, 1, 2)]
    outputs = list(backend.map(iter(batches)))
    assert [len(o) for o in outputs] == [3, 1, 2]
    for x, out in zip(batches, outputs, strict=True):
        torch.testing.assert_close(out, backend(x), rtol=0, atol=0)


def test_a_runtime_backend_leaves_pytorch_one_thread_and_restores_the_count():
    from resnets.export.backends import runtime_owns_cores

    torch.set_num_threads(2)
    with runtime_owns_cores("openvino"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), runtime_owns_cores("onnxruntime-int8"):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with runtime_owns_cores("optimized"):  # the model itself runs in PyTorch
        assert torch.get_num_threads() == 2
