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
    with pytest.raises(ValueError, match="unknown backend 'tensorrt': expected one of eager, "
                                         + ", ".join(BACKENDS)):
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
