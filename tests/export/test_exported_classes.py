"""The class names in an exported file's metadata are checked like a weights file's: a JSON
list of names, one per output of the graph; anything else is one error naming the file."""

import json

import numpy as np
import pytest

from resnets.export.exported import load_exported

PREPROCESS = json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3, "size": 8, "resize": 8})


def _write(path, classes: str | None, outputs: int = 4):
    """A tiny ONNX classifier: mean colour of (N, 3, H, W) times a (3, outputs) matrix."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, outputs), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", outputs])],
        [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"preprocess": PREPROCESS, "model": "tiny"}
    if classes is not None:
        props["classes"] = classes
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_a_class_list_matching_the_outputs_is_used(tmp_path):
    exported = load_exported(_write(tmp_path / "m.onnx", json.dumps(list("abcd"))))
    assert exported.classes == ["a", "b", "c", "d"]


@pytest.mark.parametrize("classes, message", [
    (json.dumps("cats"), "classes"),             # a JSON string, not a list of names
    ("cat,dog,bird,fish", "classes"),            # not JSON at all
    (json.dumps({"0": "cat"}), "classes"),        # a mapping
    (json.dumps(["cat", "dog"]), "2 class names.*4 outputs"),  # fewer names than outputs
    (json.dumps(list("abcdef")), "6 class names.*4 outputs"),  # more
])
def test_bad_class_metadata_is_one_error_naming_the_file(tmp_path, classes, message):
    path = _write(tmp_path / "m.onnx", classes)
    with pytest.raises(ValueError, match=message) as info:
        load_exported(path)
    assert "m.onnx" in str(info.value) and "\n" not in str(info.value)
