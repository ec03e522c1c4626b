"""The OpenVINO backends and IR format; skipped as a whole when the extra is not installed."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("openvino", reason="openvino not installed: pip install 'resnets[openvino]'")
pytest.importorskip("nncf", reason="nncf not installed: pip install 'resnets[openvino]'")

import openvino as ov  # noqa: E402

import resnets  # noqa: E402
import resnets.export.openvino as ovx  # noqa: E402
from resnets.cli import app  # noqa: E402
from resnets.export import export_model, load_backend  # noqa: E402
from tests.conftest import shared_path  # noqa: E402
from tests.export.conftest import CIFAR_SIZE, randomize_bn  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _convert_each_module_once():
    """torch.export + convert_model take seconds; tests that convert one module again get
    a copy of the first conversion (conversion itself is checked by the fp32 and export
    tests, against eager)."""
    converted: dict[tuple[int, tuple[int, int, int]], ov.Model] = {}
    original = ovx.convert

    def once(model, input_size):
        key = (id(model), tuple(input_size))
        if key not in converted:
            converted[key] = original(model, input_size)
        return converted[key].clone()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ovx, "convert", once)
        yield


@pytest.fixture(scope="module")
def int8_backend(resnet20, cifar_train, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNETS_CACHE", str(cache))
        return load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, threads=1,
                            calibration=cifar_train)


def count_quantize_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = ovx.quantize_openvino

    def counted(model, images):
        calls.append(len(images))
        return original(model, images)

    monkeypatch.setattr(ovx, "quantize_openvino", counted)
    return calls


@pytest.fixture(scope="module")
def fp32_backend(resnet20):
    return load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)


def test_fp32_backend_equals_eager_at_other_batch_and_size(resnet20, fp32_backend):
    assert fp32_backend.details["max_abs_diff"] <= 1e-4
    for shape in [(1, 3, 32, 32), (3, 3, 36, 30)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = resnet20(x)
        out = fp32_backend(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-4  # f32 asked for: no bf16 on bf16 CPUs


def test_backend_rejects_wrong_channel_count(fp32_backend):
    with pytest.raises(ValueError, match="expected a 3-channel input, got 4 channels"):
        fp32_backend(torch.zeros(1, 4, 32, 32))


def test_second_fp32_load_reads_the_converted_model_from_the_cache(resnet20, monkeypatch,
                                                                   tmp_path):
    conversions: list[int] = []
    original = ovx.convert

    def counted(model, input_size):
        conversions.append(1)
        return original(model, input_size)

    monkeypatch.setattr(ovx, "convert", counted)
    first = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)
    second = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1,
                          uint8_input=True, throughput=True)  # compiled differently, same IR
    assert len(conversions) == 1
    assert first.details["cached"] is False and second.details["cached"] is True
    assert second.details["cache_file"] == first.details["cache_file"]
    assert second.details["max_abs_diff"] <= 1e-4
    assert list((tmp_path / "cache" / "openvino").glob("*-fp32-*.xml"))


def test_uint8_input_is_normalised_inside_the_graph(resnet20):
    from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD, cifar_default

    backend = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1,
                           uint8_input=True, normalization=(CIFAR_MEAN, CIFAR_STD))
    assert backend.input_dtype == torch.uint8 and backend.details["max_abs_diff"] <= 1e-4
    compiled = backend.fn.compiled
    assert compiled.inputs[0].get_element_type() == ov.Type.u8  # no float copy in Python
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        ref = resnet20(cifar_default().normalize(images))
    assert (backend(images) - ref).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="takes uint8 images"):
        backend(images.float())


def test_throughput_map_keeps_the_order_of_the_batches(resnet20):
    from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD

    backend = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, uint8_input=True,
                           normalization=(CIFAR_MEAN, CIFAR_STD), throughput=True)
    assert str(backend.fn.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    batches = [torch.randint(0, 256, (n, *CIFAR_SIZE), dtype=torch.uint8)
               for n in (5, 1, 3, 2, 4, 1, 2)]
    outputs = list(backend.map(iter(batches)))
    assert [len(o) for o in outputs] == [5, 1, 3, 2, 4, 1, 2]
    for x, out in zip(batches, outputs, strict=True):
        assert (out - backend(x)).abs().max() <= 1e-5


def test_int8_with_uint8_input_reuses_the_cached_model(resnet20, cifar_train, monkeypatch):
    from resnets.data.folder import scan_folder
    from resnets.data.io import read_rgb
    from resnets.weights.preprocessing import cifar_default

    pre = cifar_default()
    calls = count_quantize_calls(monkeypatch)
    kw = {"input_size": CIFAR_SIZE, "threads": 1, "calibration": cifar_train[:8],
          "normalization": (pre.mean, pre.std)}
    float_in = load_backend("openvino-int8", resnet20, **kw)
    uint8_in = load_backend("openvino-int8", resnet20, uint8_input=True, **kw)
    assert calls == [8] and uint8_in.details["cached"] is True  # the same quantized model
    assert uint8_in.input_dtype == torch.uint8
    files = scan_folder(shared_path("cifar10", "test")).paths[::625]  # 16, every class
    images = torch.stack([read_rgb(p) for p in files])
    a, b = float_in(pre.normalize(images)), uint8_in(images)
    assert F.cosine_similarity(a.double(), b.double(), dim=1).min() > 0.999
    assert (a.argmax(1) == b.argmax(1)).all()


def test_int8_logits_follow_fp32_on_real_test_images(resnet20, int8_backend, cifar_test):
    with torch.no_grad():
        ref = resnet20(cifar_test)
    out = int8_backend(cifar_test)
    cosine = F.cosine_similarity(out.double(), ref.double(), dim=1)
    # NNCF's default preset (symmetric activations) follows this random-BN net less closely
    # on its worst image than onnxruntime's uint8 QDQ (test_int8.py: > 0.95); 0.92 measured
    assert cosine.mean() > 0.99 and cosine.min() > 0.9
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.85
    assert not torch.equal(out, ref)  # it really is a different (quantized) computation
    details = int8_backend.details
    assert details["cached"] is False and details["calibration_images"] == 64
    assert details["top1_agreement"] >= 0.85


def test_int8_weights_are_int8_with_one_scale_per_output_channel(resnet20, cifar_train):
    quantized = ovx.quantize_openvino(ovx.convert(resnet20, CIFAR_SIZE), cifar_train[:8])
    convs = [op for op in quantized.get_ops() if op.get_type_name() == "Convolution"]
    assert len(convs) == 19
    for conv in convs:
        scale_mul = conv.input_value(1).get_node()  # int8 constant -> Convert -> Multiply
        assert scale_mul.get_type_name() == "Multiply"
        weight = scale_mul.input_value(0).get_node().input_value(0).get_node()
        assert weight.get_output_element_type(0) == ov.Type.i8
        out_channels = weight.get_output_partial_shape(0)[0].get_length()
        scale = scale_mul.input_value(1).get_partial_shape().to_shape()
        assert list(scale) == [out_channels, 1, 1, 1]
    assert sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()) >= 19


def test_second_int8_load_reads_the_cache_without_calibrating(resnet20, cifar_train,
                                                              monkeypatch, tmp_path):
    calls = count_quantize_calls(monkeypatch)
    x = torch.randn(2, 3, 32, 32)
    first = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, threads=1,
                         calibration=cifar_train[:16])
    second = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, threads=1,
                          calibration=cifar_train[:16])
    assert calls == [16]
    assert first.details["cached"] is False and second.details["cached"] is True
    cached = sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())
    assert len(cached) == 3 and {n.split(".", 1)[1] for n in cached} == {"xml", "bin",
                                                                          "xml.sha256"}
    assert torch.equal(first(x), second(x))


def test_cache_key_follows_weights_calibration_and_folder_files(resnet20, monkeypatch):
    calls = count_quantize_calls(monkeypatch)
    train = shared_path("cifar10", "train")
    for count in (8, 8, 12):  # the same set twice, then a larger one
        load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, threads=1,
                     calibration=train, calibration_count=count)
    other = randomize_bn(resnets.create_model("resnet20"), seed=1)
    load_backend("openvino-int8", other, input_size=CIFAR_SIZE, threads=1,
                 calibration=train, calibration_count=8)
    assert calls == [8, 12, 8]


def test_a_list_of_files_calibrates_and_is_cached_like_a_folder(resnet20, monkeypatch):
    calls = count_quantize_calls(monkeypatch)
    files = sorted(shared_path("cifar10", "test", "cat").iterdir())[:8]
    for _ in range(2):  # what predict passes without --calibration: the images themselves
        backend = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE,
                               calibration=files)
    assert calls == [8] and backend.details["cached"] is True


def test_damaged_cache_entry_is_rebuilt(resnet20, cifar_train, monkeypatch, tmp_path):
    calls = count_quantize_calls(monkeypatch)
    load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, calibration=cifar_train[:8])
    xml = next((tmp_path / "cache" / "openvino").glob("*.xml"))
    xml.write_text("<net")  # cut off
    backend = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE,
                           calibration=cifar_train[:8])
    assert calls == [8, 8] and backend.details["cached"] is False
    assert backend(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_an_int8_entry_whose_weights_changed_in_place_is_quantized_again(
        resnet20, cifar_train, monkeypatch, tmp_path):
    calls = count_quantize_calls(monkeypatch)
    load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE, calibration=cifar_train[:8])
    xml = next((tmp_path / "cache" / "openvino").glob("*.xml"))
    weights = bytearray(xml.with_suffix(".bin").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # well-formed still: one weight byte
    xml.with_suffix(".bin").write_bytes(bytes(weights))
    backend = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE,
                           calibration=cifar_train[:8])
    assert calls == [8, 8] and backend.details["cached"] is False
    again = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE,
                         calibration=cifar_train[:8])
    assert calls == [8, 8] and again.details["cached"] is True


def test_unwritable_cache_still_gives_a_backend(resnet20, cifar_train, monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("RESNETS_CACHE", str(blocked))
    backend = load_backend("openvino-int8", resnet20, input_size=CIFAR_SIZE,
                           calibration=cifar_train[:8])
    assert backend.details["cache_file"] is None and "not-a-folder" in backend.details[
        "cache_error"]
    assert backend(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_export_writes_xml_and_bin_that_match_eager(resnet20, tmp_path):
    path = tmp_path / "resnet20.xml"
    report = export_model(resnet20, path, "openvino", CIFAR_SIZE)
    assert report.max_abs_diff <= report.tolerance <= 1e-3
    weights = path.with_suffix(".bin")
    assert report.size_bytes == path.stat().st_size + weights.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet20.bin", "resnet20.xml"]
    compiled = ovx.compile_model(ovx.core().read_model(str(path)), threads=1)
    x = torch.randn(3, 3, 40, 34)
    with torch.no_grad():
        assert (ovx.OvRunner(compiled)(x) - resnet20(x)).abs().max() <= 1e-4
    names = ovx.core().read_model(str(path))
    assert names.inputs[0].get_names() == {"input"} and names.outputs[0].get_names() == {"logits"}


def test_export_that_fails_its_check_leaves_neither_file(resnet20, tmp_path, monkeypatch):
    monkeypatch.setattr(ovx, "compare_outputs", lambda *args: (1.0, 1e-4))
    with pytest.raises(ValueError, match="differs from PyTorch by 1.00e"):
        export_model(resnet20, tmp_path / "m.xml", "openvino", CIFAR_SIZE)
    assert list(tmp_path.iterdir()) == []


def test_ir_needs_an_xml_name(resnet20, tmp_path):
    with pytest.raises(ValueError, match=r"a .xml file with a .bin beside it, got 'm.bin'"):
        ovx.write_ir(ov.Model([], [], "empty"), tmp_path / "m.bin")
    assert list(tmp_path.iterdir()) == []


def test_converter_nncf_and_compiler_failures_are_one_line_openvino_failures(resnet20,
                                                                              monkeypatch):
    """What ``--backend int8`` falls back from (:func:`resnets.tasks.classify.classifier_backend`),
    whatever type the runtime raised, in one line."""
    def fails(*args, **kwargs):
        raise RuntimeError("Unsupported operation\n  (more lines of detail)")

    converted = ovx.convert(resnet20, CIFAR_SIZE)
    monkeypatch.setattr(ov, "convert_model", fails)
    with pytest.raises(ovx.OpenVinoFailure,
                       match=r"^cannot convert Sequential to OpenVINO: Unsupported operation$"):
        ovx.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval(), CIFAR_SIZE)
    import nncf

    monkeypatch.setattr(nncf, "quantize", fails)
    with pytest.raises(ovx.OpenVinoFailure,
                       match=r"^NNCF cannot quantize the model: Unsupported operation$"):
        ovx.quantize_openvino(converted, torch.randn(2, *CIFAR_SIZE))

    class BrokenCore:
        def compile_model(self, *args, **kwargs):
            fails()

    monkeypatch.setattr(ovx, "core", BrokenCore)
    with pytest.raises(ovx.OpenVinoFailure,
                       match=r"^OpenVINO cannot compile the model: Unsupported operation$"):
        ovx.compile_model(converted)


def test_cli_export_openvino_by_suffix_reports_the_check(tmp_path):
    out = tmp_path / "resnet20.xml"
    result = runner.invoke(app, ["export", "--model", "resnet20", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "(openvino via openvino.convert_model" in result.output
    assert "max |diff| vs PyTorch" in result.output and out.with_suffix(".bin").is_file()


def test_cli_predict_openvino_gives_the_torch_classes():
    images = shared_path("cifar10", "test", "cat")
    files = sorted(images.iterdir())[:6]
    args = ["predict", *map(str, files), "--model", "resnet20", "--json", "--top-k", "1"]
    runs = [runner.invoke(app, args), runner.invoke(app, [*args, "--backend", "openvino"])]
    assert all(r.exit_code == 0 for r in runs), runs[1].output
    tops = [[(d["path"], d["top"][0]["class"]) for d in map(json.loads, r.output.splitlines())]
            for r in runs]
    assert len(tops[0]) == 6 and tops[0] == tops[1]


def test_bench_times_ours_and_the_openvino_peers():
    from resnets.export.bench import BenchConfig, run_bench

    cfg = BenchConfig(model="resnet20", batches=(2,), backends=("openvino", "openvino-int8"),
                      compare=("openvino", "openvino-int8"), repeats=1, warmup=1,
                      min_time_s=0.0, max_calls=1, threads=1, calib_images=8,
                      calib_dir=str(shared_path("cifar10", "train")))
    report = run_bench(cfg)
    rows = {r["backend"]: r for r in report["results"]}
    assert set(rows) == {"plain:eager", "resnets:openvino", "resnets:openvino-int8",
                         "plain:openvino", "plain:openvino-int8"}
    assert rows["resnets:openvino"]["max_abs_diff_vs_baseline"] <= 1e-4
    assert rows["plain:openvino"]["max_abs_diff_vs_baseline"] <= 1e-4
    assert report["machine"]["openvino"] and report["machine"]["nncf"]


def _cifar_top1(name: str, per_class: int | None) -> tuple[float, float]:
    """(fp32, openvino-int8) top-1 of a bundled model on cifar10/test (``per_class`` images
    of each class, or all), int8 calibrated on 256 training images."""
    from resnets.data.folder import scan_folder
    from resnets.data.io import read_rgb
    from resnets.export.int8 import calibration_images
    from resnets.weights import load_classifier

    clf = load_classifier(name)
    pre = clf.preprocessing
    size = (3, pre.input_size, pre.input_size)
    calib = calibration_images(shared_path("cifar10", "train"), 256, size[1:], seed=0,
                               mean=pre.mean, std=pre.std)
    int8 = load_backend("openvino-int8", clf.model, input_size=size, threads=1,
                        calibration=calib)
    index = scan_folder(shared_path("cifar10", "test"))
    pairs = list(zip(index.paths, index.labels, strict=True))
    if per_class is not None:
        kept: dict[int, int] = {}
        subset = []
        for path, label in pairs:
            if kept.get(label, 0) < per_class:
                kept[label] = kept.get(label, 0) + 1
                subset.append((path, label))
        pairs = subset
    correct = {"fp32": 0, "int8": 0}
    for start in range(0, len(pairs), 500):
        chunk = pairs[start:start + 500]
        labels = torch.tensor([y for _, y in chunk])
        x = pre(torch.stack([read_rgb(p) for p, _ in chunk]))
        with torch.no_grad():
            correct["fp32"] += int((clf.model(x).argmax(1) == labels).sum())
        correct["int8"] += int((int8(x).argmax(1) == labels).sum())
    return 100 * correct["fp32"] / len(pairs), 100 * correct["int8"] / len(pairs)


def test_int8_resnet20_within_half_a_point_of_fp32_on_a_test_subset():
    fp32, int8 = _cifar_top1("resnet20", per_class=200)  # 2,000 test images
    assert fp32 > 80.0, f"fp32 {fp32:.2f}%: not the bundled weights?"
    assert abs(fp32 - int8) <= 0.5, f"fp32 {fp32:.2f}%, openvino-int8 {int8:.2f}%"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_int8_within_half_a_point_of_fp32_on_the_full_test_split(name):
    fp32, int8 = _cifar_top1(name, per_class=None)
    assert abs(fp32 - int8) <= 0.5, f"fp32 {fp32:.2f}%, openvino-int8 {int8:.2f}%"


def test_ir_carries_classes_and_preprocessing_of_the_weights(tmp_path):
    from resnets.export import export_named
    from resnets.weights import load_classifier

    export_named("resnet20", tmp_path / "r20.xml", weights="resnet20")
    model = ovx.core().read_model(str(tmp_path / "r20.xml"))
    clf = load_classifier("resnet20")
    info = {k: model.get_rt_info(["resnets", k]).astype(str)
            for k in ("model", "classes", "preprocess")}
    assert info["model"] == "resnet20" and json.loads(info["classes"]) == clf.classes
    assert json.loads(info["preprocess"])["std"] == list(clf.preprocessing.std)


def test_fp32_cache_entry_that_no_longer_matches_pytorch_is_rebuilt(resnet20, tmp_path):
    """The fp32 model read from the cache is compared with PyTorch on every load; an entry
    whose weights are not the model's (damaged in place, same size) is converted again and
    replaced, never run."""
    from pathlib import Path

    first = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)
    xml = Path(first.details["cache_file"])
    torch.manual_seed(1)
    other = randomize_bn(resnets.create_model("resnet20"), seed=1)
    ovx.write_ir(ovx.convert(other, CIFAR_SIZE), xml)  # well formed, other weights
    second = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)
    assert second.details["cached"] is False and second.details["max_abs_diff"] <= 1e-4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = resnet20(x)
    assert (second(x) - ref).abs().max() <= 1e-4
    third = load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)
    assert third.details["cached"] is True and third.details["max_abs_diff"] <= 1e-4


def test_fresh_fp32_conversion_that_fails_its_check_is_refused_and_not_cached(
        resnet20, tmp_path, monkeypatch):
    """A conversion that does not reproduce PyTorch is an error, not a backend, and is not
    left in the cache for the next run to read."""
    monkeypatch.setattr(ovx, "compare_outputs", lambda *args: (1.0, 1e-4))
    with pytest.raises(ovx.OpenVinoFailure, match=r"differs from PyTorch by 1.00e\+00"):
        load_backend("openvino", resnet20, input_size=CIFAR_SIZE, threads=1)
    cache = tmp_path / "cache" / "openvino"
    assert not list(cache.glob("*.xml")) and not list(cache.glob("*.bin"))


def test_auto_runs_pytorch_when_openvino_fails_its_check(monkeypatch):
    """``auto`` resolves to openvino here; a conversion that fails its check falls back to
    PyTorch with a warning saying why (:func:`resnets.tasks.classify.classifier_backend`)."""
    from resnets.export.backends import resolve_backend
    from resnets.tasks.classify import classifier_backend
    from resnets.weights import load_classifier

    assert resolve_backend("auto") == "openvino"
    monkeypatch.setattr(ovx, "compare_outputs", lambda *args: (1.0, 1e-4))
    clf = load_classifier("resnet20")
    with pytest.warns(UserWarning, match=r"^openvino cannot run resnet20 \(OpenVINO output "
                                         r"differs from PyTorch.*running it in PyTorch$"):
        backend = classifier_backend(clf, "auto", throughput=False)
    assert backend.kind == "optimized"
    assert backend(torch.zeros(2, *CIFAR_SIZE, dtype=torch.uint8)).shape == (2, 10)


SIGNAL_AFTER_FREED_MODELS = r"""
import gc, os, signal, sys
import torch
from torch import nn
import resnets.export.openvino as ovx

net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten()).eval()
x = torch.rand(1, 3, 8, 8)
runners = [ovx.OvRunner(ovx.compile_model(ovx.convert(net, (3, 8, 8)), threads=1), 3)
           for _ in range(2)]
for r in runners:
    r(x)
first, second = runners
del runners, r
del first; gc.collect()   # freed in the order they were made, not the reverse
del second; gc.collect()
ran = []
signal.signal(signal.SIGUSR1, lambda *_: ran.append(True))
os.kill(os.getpid(), signal.SIGUSR1)
print("handled" if ran else "not handled")
"""


def test_signals_after_models_are_freed(tmp_path):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack and puts the old one
    back when freed: with a Core per model, freeing two models in the order they were made
    left the stack unmapped and the next Python signal handler (here SIGUSR1; in the test
    suite the DataLoader's SIGCHLD handler) killed the process with SIGSEGV. One process-wide
    Core (resnets.export.openvino.core) keeps it mapped."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_FREED_MODELS],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "RESNETS_CACHE": str(tmp_path)})
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("handled") and "not handled" not in proc.stdout


def test_one_core_serves_every_model():
    assert ovx.core() is ovx.core()


TELEMETRY_OF_A_CONVERSION = r"""
import multiprocessing, sys
import torch
from torch import nn

started = []  # openvino_telemetry sends each event from a process of its own
_start = multiprocessing.Process.start
def start(self):
    started.append(self.name)
    _start(self)
multiprocessing.Process.start = start

import resnets.export.openvino as ovx

net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten()).eval()
ovx.OvRunner(ovx.compile_model(ovx.convert(net, (3, 8, 8)), threads=1), 3)(torch.rand(1, 3, 8, 8))
ovx.require_nncf()
from nncf.telemetry import wrapper
from openvino.tools.ovc import telemetry_utils
print(telemetry_utils.tm.__name__, isinstance(wrapper.telemetry, wrapper.NNCFTelemetry), started)
"""


def test_openvino_and_nncf_send_no_telemetry(tmp_path):
    """Without a consent file, openvino_telemetry sent events from ``import openvino`` on,
    each from a forked process trying to reach the internet (none here): a finished command
    waited for them, and a Ctrl-C printed a traceback from each. In a fresh process, as the
    CLI runs: OpenVINO and NNCF fall back to their stubs, and no process is started."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", TELEMETRY_OF_A_CONVERSION],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "RESNETS_CACHE": str(tmp_path)})
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.split()[-3:] == ["openvino.tools.ovc.telemetry_stub", "False", "[]"], \
        proc.stdout
