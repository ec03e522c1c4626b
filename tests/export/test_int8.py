import hashlib
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import resnets
from resnets.export import Int8Report, load_backend, quantize_onnx
from resnets.export.int8 import calibration_images
from resnets.export.onnx import OrtRunner, ort_session
from tests.conftest import shared_path
from tests.export.conftest import CIFAR_SIZE, randomize_bn


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


@pytest.mark.parametrize("kind", ["int8", "onnxruntime-int8"])
def test_int8_backend_without_calibration_images_says_what_to_pass(kind):
    with pytest.raises(ValueError, match="int8 needs calibration images: give a folder"):
        load_backend(kind, resnets.create_model("resnet20"), input_size=(3, 32, 32))


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
    int8 = load_backend("onnxruntime-int8", clf.model, input_size=size, calibration=calib)
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


def count_quantize_calls(monkeypatch, copy_of: Path | None = None) -> list[int]:
    """Calls of the quantizer behind the int8 backend (by calibration images); with
    ``copy_of``, a quantized file stands in for quantizing (the cache is what is tested)."""
    from resnets.export import int8

    calls: list[int] = []
    original = int8.quantized_session

    def counted(model, out_path, input_size, images, **kw):
        calls.append(len(images))
        if copy_of is None:
            return original(model, out_path, input_size, images, **kw)
        shutil.copyfile(copy_of, out_path)
        session = ort_session(out_path, kw.get("threads"))
        return session, Int8Report(Path(out_path), len(images), 1.0, 1.0)

    monkeypatch.setattr(int8, "quantized_session", counted)
    return calls


def load_int8(model, calibration, **kw):
    return load_backend("onnxruntime-int8", model, input_size=CIFAR_SIZE, threads=1,
                        calibration=calibration, **kw)


def test_second_int8_load_reads_the_cache_without_calibrating(resnet20, cifar_train,
                                                              monkeypatch, tmp_path):
    calls = count_quantize_calls(monkeypatch)
    first = load_int8(resnet20, cifar_train[:16])
    second = load_int8(resnet20, cifar_train[:16])
    assert calls == [16]
    assert first.details["cached"] is False and first.details["top1_agreement"] >= 0.8
    assert second.details == {"cached": True, "cache_file": first.details["cache_file"]}
    cached = sorted((tmp_path / "cache" / "onnxruntime").iterdir())
    name = Path(first.details["cache_file"]).name  # the entry and its sha256
    assert [p.name for p in cached] == [name, f"{name}.sha256"]
    assert name.startswith("resnet-int8-") and name.endswith(".onnx")
    x = torch.randn(3, *CIFAR_SIZE)
    assert torch.equal(first(x), second(x))


def test_int8_cache_key_follows_weights_and_calibration_set(resnet20, int8_runner,
                                                            monkeypatch):
    calls = count_quantize_calls(monkeypatch, copy_of=int8_runner[0])
    train = shared_path("cifar10", "train")
    for count in (8, 8, 12):  # the same folder sample twice, then a larger one
        load_int8(resnet20, train, calibration_count=count)
    other = randomize_bn(resnets.create_model("resnet20"), seed=1)
    load_int8(other, train, calibration_count=8)
    files = sorted(shared_path("cifar10", "test", "cat").iterdir())[:8]
    for _ in range(2):  # what predict passes without a calibration folder: its inputs
        backend = load_int8(resnet20, files)
    assert calls == [8, 12, 8, 8] and backend.details["cached"] is True


def test_damaged_int8_cache_entry_is_replaced(resnet20, int8_runner, monkeypatch):
    calls = count_quantize_calls(monkeypatch, copy_of=int8_runner[0])
    images = torch.randn(4, *CIFAR_SIZE)
    entry = Path(load_int8(resnet20, images).details["cache_file"])
    entry.write_bytes(entry.read_bytes()[:1000])  # cut off
    rebuilt = load_int8(resnet20, images)
    assert calls == [4, 4] and rebuilt.details["cached"] is False
    assert entry.read_bytes() == int8_runner[0].read_bytes()
    again = load_int8(resnet20, images)
    assert calls == [4, 4] and again.details["cached"] is True
    assert again(torch.randn(1, *CIFAR_SIZE)).shape == (1, 10)


def _flip_a_byte(path: Path) -> None:
    """Change one byte in the middle of the file: in a model that is a weight, so the file
    still loads (a damaged disk or an edit, not a cut-off write)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_int8_entry_changed_in_place_but_well_formed_is_quantized_again(
        resnet20, int8_runner, monkeypatch):
    """int8 entries cannot be checked against PyTorch when loaded; their sha256 (written
    beside them) is. An entry without it (cut off before it, or older) is rebuilt too."""
    calls = count_quantize_calls(monkeypatch, copy_of=int8_runner[0])
    images = torch.randn(4, *CIFAR_SIZE)
    entry = Path(load_int8(resnet20, images).details["cache_file"])
    assert Path(f"{entry}.sha256").read_text().strip() == hashlib.sha256(
        entry.read_bytes()).hexdigest()
    _flip_a_byte(entry)
    import onnxruntime as ort

    ort.InferenceSession(str(entry), providers=["CPUExecutionProvider"])  # still loads
    assert load_int8(resnet20, images).details["cached"] is False and calls == [4, 4]
    Path(f"{entry}.sha256").unlink()
    assert load_int8(resnet20, images).details["cached"] is False and calls == [4, 4, 4]
    assert load_int8(resnet20, images).details["cached"] is True and calls == [4, 4, 4]


def _write_ppm_files(folder: Path, seed: int) -> list[Path]:
    """Eight random 32x32 PPM files: the same names and byte sizes whatever the seed."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{i}.ppm" for i in range(8)]
    for path in paths:
        pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g)
        Image.fromarray(pixels.numpy()).save(path)
    return paths


@pytest.mark.parametrize("given", ["folder", "files"])
def test_calibration_images_replaced_by_others_of_the_same_size_calibrate_again(
        resnet20, int8_runner, monkeypatch, tmp_path, given):
    """The cache key holds what the calibration files contain, not only their names and
    sizes: PPM files of one shape all have one size."""
    calls = count_quantize_calls(monkeypatch, copy_of=int8_runner[0])
    folder = tmp_path / "calib"
    files = _write_ppm_files(folder, seed=0)
    sizes = [p.stat().st_size for p in files]
    first = load_int8(resnet20, folder if given == "folder" else files)
    _write_ppm_files(folder, seed=1)
    assert [p.stat().st_size for p in files] == sizes
    second = load_int8(resnet20, folder if given == "folder" else files)
    assert calls == [8, 8] and second.details["cached"] is False
    assert second.details["cache_file"] != first.details["cache_file"]
    third = load_int8(resnet20, folder if given == "folder" else files)
    assert calls == [8, 8] and third.details["cached"] is True


def test_unwritable_int8_cache_still_gives_a_backend(resnet20, int8_runner, monkeypatch,
                                                     tmp_path):
    calls = count_quantize_calls(monkeypatch, copy_of=int8_runner[0])
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("RESNETS_CACHE", str(blocked))
    images = torch.randn(4, *CIFAR_SIZE)
    for _ in range(2):  # each run calibrates again, and only that
        backend = load_int8(resnet20, images)
        assert backend.details["cache_file"] is None
        assert "not-a-folder" in backend.details["cache_error"]
        assert backend(torch.randn(1, *CIFAR_SIZE)).shape == (1, 10)
    assert calls == [4, 4] and blocked.read_text() == ""


def test_a_cache_miss_builds_one_session_of_the_int8_graph(resnet20, cifar_train, monkeypatch,
                                                           tmp_path):
    """The session that measured int8's agreement with fp32 is the one returned, and no
    session is built just to read the fp32 graph's input name."""
    pytest.importorskip("onnxruntime")
    from resnets.export import int8

    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    built: list[str] = []
    original = int8.ort_session

    def counted(path, threads=None):
        built.append(Path(path).name)
        return original(path, threads)

    monkeypatch.setattr(int8, "ort_session", counted)
    backend = load_int8(resnet20, cifar_train[:16])
    assert built == ["int8.onnx"] and backend.details["cached"] is False
    assert load_int8(resnet20, cifar_train[:16]).details["cached"] is True
    assert len(built) == 2 and built[1].startswith("resnet-int8-")  # a hit: one more


def test_unreadable_calibration_images_are_skipped_not_fatal(tmp_path):
    """One damaged, missing or folder-named file among the calibration images costs that
    image, not the calibration; none readable at all is one ValueError."""
    import numpy as np
    from PIL import Image

    from resnets.export.int8 import calibration_identity

    good = []
    for i in range(3):
        good.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((40, 36, 3), 60 * i, np.uint8)).save(good[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    folder_named = tmp_path / "dir.jpg"
    folder_named.mkdir()
    files = [*good, bad, tmp_path / "missing.jpg", folder_named]
    with pytest.warns(UserWarning, match="3 of the 6 calibration images could not be read"):
        images = calibration_images(files, 8, (32, 32))
    assert images.shape == (3, 3, 32, 32)
    identity, picked = calibration_identity(files, 8)
    assert len(picked) == 6 and len(identity["files"]) == 6
    with pytest.raises(ValueError, match="none of the 2 calibration images could be read"):
        calibration_images([bad, tmp_path / "missing.jpg"], 8, (32, 32))


class _Stop(Exception):
    pass


@pytest.mark.parametrize("kind", ["onnxruntime-int8", "openvino-int8"])
def test_int8_calibrates_on_images_preprocessed_as_the_weights_say(resnet20, tmp_path,
                                                                   monkeypatch, kind):
    # calibration resized every image to the input size (resize 28, crop 28), not as the
    # weights' own preprocessing does (here ImageNet-style: resize 32, then crop 28)
    import numpy as np
    from PIL import Image

    from resnets.data.io import read_rgb
    from resnets.export import int8, openvino
    from resnets.tasks.classify import classifier_backend
    from resnets.weights.classifier import Classifier
    from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD, Preprocessing

    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(files[-1])
    seen: list[torch.Tensor] = []
    keys: list[dict] = []

    def quantized(model, out_path, input_size, images, **kw):  # onnxruntime-int8
        seen.append(images)
        raise _Stop

    def quantize_openvino(model, images):
        seen.append(images)
        raise _Stop

    for module in (int8, openvino):  # what the cache keys are made of
        monkeypatch.setattr(module, "cache_key", lambda d, real=module.cache_key:
                            keys.append(d) or real(d))
    monkeypatch.setattr(int8, "quantized_session", quantized)
    monkeypatch.setattr(openvino, "convert", lambda model, input_size: None)
    monkeypatch.setattr(openvino, "quantize_openvino", quantize_openvino)
    if kind == "openvino-int8":
        pytest.importorskip("nncf")
    for pre in (Preprocessing(resize=32, crop=28, mean=CIFAR_MEAN, std=CIFAR_STD),
                Preprocessing(resize=28, crop=28, mean=CIFAR_MEAN, std=CIFAR_STD)):
        clf = Classifier(resnet20, "resnet20", [str(c) for c in range(10)], pre, "test")
        with pytest.raises(_Stop):
            classifier_backend(clf, kind, files)
        picked = int8.pick_calibration_files(files, 128)
        expected = torch.stack([pre(read_rgb(f)) for f in picked])
        assert torch.allclose(seen[-1], expected, atol=1e-6)
    assert not torch.allclose(seen[0], seen[1], atol=1e-3)  # the resize matters here
    assert len(keys) == 2 and keys[0] != keys[1]  # and is part of the cache key
    # the graph's maker is in the key too: another torch (or onnxscript) exports another graph
    from resnets.export.model_cache import package_versions

    assert all(k["torch"] == package_versions("torch")["torch"] is not None for k in keys)
    if kind == "onnxruntime-int8":
        assert all("onnxscript" in k for k in keys)
