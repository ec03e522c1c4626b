"""Running an exported ONNX or OpenVINO file as a classifier, without the model's PyTorch code.

:func:`resnets.export.export_model` writes the class names and the preprocessing into the
file (ONNX ``metadata_props``, OpenVINO ``rt_info`` under ``resnets``); this reads them back
and runs the graph in onnxruntime or OpenVINO. A graph exported with uint8 input takes the
resized and cropped images as they are; a float one gets them normalised first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..weights.classifier import metadata_classes
from ..weights.preprocessing import Preprocessing
from .onnx import OrtRunner, ort_session

EXPORTED_SUFFIXES = (".onnx", ".xml")


@dataclass
class ExportedClassifier:
    """An exported graph with what it takes to use it: what :class:`resnets.Classifier`
    gives, with a runtime in place of the module."""

    run: Callable[[torch.Tensor], torch.Tensor]  # a batch (uint8 or normalised float) to logits
    name: str                     # the architecture the file names ("model" if it does not)
    classes: list[str]
    preprocessing: Preprocessing
    input_dtype: torch.dtype      # torch.uint8: normalisation is inside the graph
    source: str
    runtime: str                  # "onnxruntime" or "openvino"
    notes: list[str] = field(default_factory=list)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch, resized and cropped, as the graph takes it."""
        return images if self.input_dtype == torch.uint8 else self.preprocessing.normalize(images)


def is_exported_file(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file or an OpenVINO IR (by its suffix)."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


def _metadata(path: Path, threads: int | None
              ) -> tuple[dict[str, str], Callable, str, int, int | None]:
    """(metadata, runner, runtime name, input channels, outputs per image where the graph
    gives them) of an ONNX file or OpenVINO IR."""
    if path.suffix.lower() == ".onnx":
        session = ort_session(path, threads)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        channels = session.get_inputs()[0].shape[1]
        in_chans = channels if isinstance(channels, int) else 3
        shape = session.get_outputs()[0].shape
        outputs = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        return meta, OrtRunner(session, in_chans), "onnxruntime", in_chans, outputs
    from .openvino import OvRunner, compile_model, read_ir, require_openvino

    require_openvino()  # a one-line error naming the extra, before any file check
    if not path.with_suffix(".bin").is_file():
        raise FileNotFoundError(f"{path.with_suffix('.bin')} not found: an OpenVINO IR needs "
                                f"its .bin beside the .xml")
    model = read_ir(path)
    meta = {}
    if model.has_rt_info(["resnets"]):
        for key in model.get_rt_info(["resnets"]).astype(dict):
            meta[key] = model.get_rt_info(["resnets", key]).astype(str)
    channels = model.inputs[0].get_partial_shape()[1]
    in_chans = channels.get_length() if channels.is_static else 3
    shape = model.outputs[0].get_partial_shape()
    outputs = (shape[1].get_length() if shape.rank.is_static and shape.rank.get_length() == 2
               and shape[1].is_static else None)
    return (meta, OvRunner(compile_model(model, threads), in_chans), "openvino", in_chans,
            outputs)


def load_exported(path: str | Path, threads: int | None = None) -> ExportedClassifier:
    """An exported ONNX file or OpenVINO IR, ready to classify with its own class names and
    preprocessing. A file without a preprocessing record is refused (the model's input size
    and statistics cannot be guessed from a graph); one without class names gets indices."""
    path = Path(path)
    if not is_exported_file(path):
        raise ValueError(f"expected an exported model ({', '.join(EXPORTED_SUFFIXES)}), got "
                         f"{path.name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    meta, runner, runtime, _, outputs = _metadata(path, threads)
    if "preprocess" not in meta:
        raise ValueError(f"{path.name} records no preprocessing in its metadata (an export "
                         "of a model without its weights has none: it holds untrained "
                         "weights): export it again from its weights, or run the weights "
                         "themselves")
    try:
        pre = Preprocessing.from_dict(json.loads(meta["preprocess"]))
    except (json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path.name}: invalid preprocess metadata ({e})") from None
    notes = []
    count = outputs if outputs is not None else int(
        runner(_probe(pre, runner.input_dtype)).shape[1])
    if "classes" in meta:
        classes = _class_names(path, meta["classes"], count)
    else:
        classes = [str(i) for i in range(count)]
        notes.append(f"{path.name} records no class names: using indices 0..{count - 1}")
    return ExportedClassifier(runner, meta.get("model", "model"), classes, pre,
                              runner.input_dtype, str(path), runtime, notes)


def _class_names(path: Path, text: str, count: int) -> list[str]:
    """The ``classes`` metadata: a JSON list of names, one per output of the graph."""
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = text  # shown as it is in the error
    return metadata_classes(names, count, path.name)


def _probe(pre: Preprocessing, dtype: torch.dtype) -> torch.Tensor:
    """One blank input of the preprocessing's size, to ask the graph for its class count."""
    side = pre.input_size or 32
    image = torch.zeros((1, len(pre.mean), side, side), dtype=torch.uint8)
    return image if dtype == torch.uint8 else pre.normalize(image)
