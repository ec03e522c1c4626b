import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.export import load_backend, quantize_onnx
from resnets.export.int8 import calibration_images
from resnets.export.onnx import OrtRunner, ort_session
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def int8_runner(resnet20_onnx, cifar_train, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "resnet20-int8.onnx"
    quantize_onnx(resnet20_onnx[0], path, cifar_train)
    return path, OrtRunner(ort_session(path, threads=1))


def test_int8_logits_follow_fp32_on_real_test_images(resnet20, int8_runner, cifar_test):
    with torch.no_grad():
        ref = resnet20(cifar_test)
    out = int8_runner[1](cifar_test)
    cosine = F.cosine_similarity(out.double(), ref.double(), dim=1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.95
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.85
    assert not torch.equal(out, ref)  # it really is a different (quantized) computation


def test_int8_graph_is_quantized_with_per_channel_weights(int8_runner):
    import onnx

    # QDQ pairs around every conv, weights with one scale per output channel
    model = onnx.load(str(int8_runner[0]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 19 and ops.count("DequantizeLinear") >= 19 + 19
    scales = {i.name: i for i in model.graph.initializer}
    conv_w_scale = [n.input[1] for n in model.graph.node
                    if n.op_type == "DequantizeLinear" and "conv1.weight" in n.input[0]]
    assert conv_w_scale and len(scales[conv_w_scale[0]].dims) == 1
    assert scales[conv_w_scale[0]].dims[0] == 16  # one scale per output channel


def test_calibration_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="calibration folder not found"):
        calibration_images(tmp_path / "nope", 8, (32, 32))
    with pytest.raises(ValueError, match=f"no images under {tmp_path}"):
        calibration_images(tmp_path, 8, (32, 32))


def test_int8_backend_without_calibration_images_says_what_to_pass():
    with pytest.raises(ValueError, match="int8 needs calibration images: give a folder"):
        load_backend("int8", resnets.create_model("resnet20"), input_size=(3, 32, 32))


def _bundled_classifier(name: str):
    from resnets.weights import load_classifier

    try:
        return load_classifier(name)
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(f"resnets has no bundled {name} weights yet ({e})")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_int8_accuracy_on_cifar10_test_within_half_a_point_of_fp32(name):
    """The issue's target: calibrate on training images only, score the full test set."""
    from resnets.data.folder import scan_folder
    from resnets.data.io import read_rgb

    clf = _bundled_classifier(name)
    pre = clf.preprocessing
    size = (3, pre.input_size, pre.input_size)
    calib = calibration_images(shared_path("cifar10", "train"), 512, size[1:], seed=0,
                               mean=pre.mean, std=pre.std)
    int8 = load_backend("int8", clf.model, input_size=size, calibration=calib)
    index = scan_folder(shared_path("cifar10", "test"))
    correct = {"fp32": 0, "int8": 0}
    for start in range(0, len(index.paths), 500):
        paths = index.paths[start:start + 500]
        labels = torch.tensor(index.labels[start:start + 500])
        x = pre(torch.stack([read_rgb(p) for p in paths]))
        with torch.no_grad():
            correct["fp32"] += int((clf.model(x).argmax(1) == labels).sum())
        correct["int8"] += int((int8(x).argmax(1) == labels).sum())
    fp32, q = (100 * correct[k] / len(index.paths) for k in ("fp32", "int8"))
    assert abs(fp32 - q) <= 0.5, f"fp32 {fp32:.2f}%, int8 {q:.2f}%"
