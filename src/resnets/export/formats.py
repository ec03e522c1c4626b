"""Writing a model in the formats deployment stacks take, each checked after writing.

- ``onnx``: see :mod:`resnets.export.onnx` (dynamic batch/height/width, onnxruntime-checked).
- ``openvino``: an OpenVINO IR, ``model.xml`` with ``model.bin`` beside it (fp32, dynamic
  batch/height/width), checked in OpenVINO; both files are moved into place or neither.
  Needs ``pip install 'resnets[openvino]'``.
- ``torch-export``: a ``torch.export`` program (``.pt2``), TorchScript's successor; load it
  with ``torch.export.load(path).module()``. Batch, height and width are dynamic.
- ``torchscript``: ``torch.jit.script`` of the model, for stacks that still need it.
- ``safetensors``: the ``state_dict`` with the model name in the metadata; load it with
  ``resnets.export.load_model(name, weights=path)``.

ONNX and OpenVINO files carry a description in their metadata (ONNX ``metadata_props``,
OpenVINO ``rt_info`` under ``resnets``): the model name, the resnets version, what the input
is (``input``: ``float32`` normalised, or ``uint8``) and, where the weights record them
(``resnets train`` files, bundled weights), the class names and the preprocessing, as JSON
strings. With ``uint8_input`` the normalisation is part of the graph
(:class:`~resnets.export.graphs.Uint8Input`): uint8 images, resized and cropped as the
preprocessing says, go straight in, and :func:`resnets.export.exported.load_exported` (or
any program that reads the metadata) runs the file without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..files import atomic_output
from ..models.registry import get_spec
from ..weights.classifier import load_classifier, load_model
from ..weights.preprocessing import Preprocessing, cifar_default, imagenet_default
from .graphs import Uint8Input
from .onnx import export_onnx
from .shapes import check_inputs, dynamic_shapes, quiet, sample_input

FORMATS = ("onnx", "openvino", "torch-export", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "torch-export": ".pt2", "torchscript": ".pt",
            "safetensors": ".safetensors"}
# Other names a format's files go by; a suffix outside these names another format.
OTHER_SUFFIXES = {"torchscript": (".pth", ".ts", ".torchscript")}


class SuffixMismatch(ValueError):
    """The output's suffix names another format than the one asked for."""


@dataclass(frozen=True)
class ExportReport:
    """One written file and how it was checked."""

    path: Path
    format: str
    exporter: str
    max_abs_diff: float | None  # against the PyTorch model; None where not applicable
    tolerance: float | None
    size_bytes: int  # every file written (an OpenVINO IR: .xml and .bin)

    def summary(self) -> str:
        check = ("" if self.max_abs_diff is None
                 else f", max |diff| vs PyTorch {self.max_abs_diff:.2e} "
                      f"(tolerance {self.tolerance:.0e})")
        return (f"wrote {self.path} ({self.format} via {self.exporter}, "
                f"{self.size_bytes / 1e6:.1f} MB{check})")


def _max_diff(model: nn.Module, other, inputs: list[torch.Tensor]) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            worst = max(worst, float((other(x) - model(x)).abs().max()))
    return worst


def _export_program(model: nn.Module, path: Path, input_size: tuple[int, int, int],
                    atol: float) -> tuple[float, float]:
    try:
        with quiet():
            program = torch.export.export(model, (sample_input(input_size),),
                                          dynamic_shapes=dynamic_shapes())
    except Exception as e:  # torch.export raises many types; the user needs the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"torch.export cannot capture {type(model).__name__}: {first}") from None
    with atomic_output(path) as tmp:
        torch.export.save(program, tmp)
        loaded = torch.export.load(tmp).module()
        diff = _max_diff(model, loaded, check_inputs(input_size))
        if diff > atol:
            raise ValueError(f"the torch.export program differs from the model by {diff:.2e}")
    return diff, atol


def _export_torchscript(model: nn.Module, path: Path, input_size: tuple[int, int, int],
                        atol: float) -> tuple[float, float]:
    with quiet():
        scripted = torch.jit.script(model)
    with atomic_output(path) as tmp, quiet():
        torch.jit.save(scripted, str(tmp))
        loaded = torch.jit.load(str(tmp))
        diff = _max_diff(model, loaded, check_inputs(input_size))
        if diff > atol:
            raise ValueError(f"the TorchScript module differs from the model by {diff:.2e}")
    return diff, atol


def _export_safetensors(model: nn.Module, path: Path, name: str,
                        described: dict[str, str] | None = None) -> None:
    """The ``state_dict`` with the model name and, where ``described`` (:func:`describe`)
    has them, the class names and preprocessing, which :func:`resnets.load_classifier`
    reads back as it reads a trained file's."""
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "model": name, "resnets_version": __version__}
    metadata.update({k: described[k] for k in ("classes", "preprocess")
                     if k in (described or {})})
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        back = load_file(str(tmp))
        if back.keys() != state.keys() or any(not torch.equal(back[k], v)
                                              for k, v in state.items()):
            raise ValueError(f"safetensors round trip of {name} changed the weights")


def describe(name: str, weights_metadata: dict | None = None,
             uint8_input: bool = False) -> dict[str, str]:
    """The metadata an ONNX or OpenVINO file carries: model name, resnets version, the input
    type, and the weights' class names and preprocessing when they record them (JSON
    strings)."""
    meta = {"model": name, "resnets_version": __version__,
            "input": "uint8" if uint8_input else "float32"}
    for key in ("classes", "preprocess"):
        value = (weights_metadata or {}).get(key)
        if value:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def export_model(model: nn.Module, path: str | Path, fmt: str,
                 input_size: tuple[int, int, int], *, name: str = "model",
                 atol: float = 1e-4, metadata: dict[str, str] | None = None,
                 uint8_input: Preprocessing | None = None) -> ExportReport:
    """Write ``model`` to ``path`` in format ``fmt``, checked, atomically. ONNX and OpenVINO
    files carry ``metadata`` (default: :func:`describe` of ``name``).

    ``uint8_input`` (ONNX and OpenVINO only): the preprocessing whose mean and std go into
    the graph, which then takes uint8 images."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval()
    if uint8_input is not None:
        if fmt not in ("onnx", "openvino"):
            raise ValueError(f"uint8 input is for the onnx and openvino formats, not {fmt}")
        model = Uint8Input(model, uint8_input.mean, uint8_input.std).eval()
    diff: float | None = None
    tolerance: float | None = None
    exporter = fmt
    if metadata is None:
        metadata = describe(name, uint8_input=uint8_input is not None)
    if fmt == "onnx":
        result = export_onnx(model, path, input_size, atol=atol, metadata=metadata)
        diff, tolerance, exporter = result.max_abs_diff, result.tolerance, result.exporter
        exporter = f"torch.onnx {exporter}"
    elif fmt == "openvino":
        from .openvino import export_openvino

        diff, tolerance = export_openvino(model, path, input_size, atol=atol,
                                          metadata=metadata)
        exporter = "openvino.convert_model"
    elif fmt == "torch-export":
        diff, tolerance = _export_program(model, path, input_size, atol)
        exporter = "torch.export"
    elif fmt == "torchscript":
        diff, tolerance = _export_torchscript(model, path, input_size, atol)
        exporter = "torch.jit.script"
    else:
        _export_safetensors(model, path, name, metadata)
    size = path.stat().st_size
    if fmt == "openvino":
        size += path.with_suffix(".bin").stat().st_size
    return ExportReport(path, fmt, exporter, diff, tolerance, size)


def export_named(name: str, path: str | Path, fmt: str | None = None,
                 weights: str | Path | None = None, *, force_extension: bool = False,
                 allow_nonfinite: bool = False, uint8_input: bool = False) -> ExportReport:
    """Build registry model ``name`` (with ``weights``) and export it; the format defaults to
    the one the file suffix names (``.onnx``, ``.xml``, ``.pt2``, ``.pt``, ``.safetensors``).
    A suffix that names another format is refused unless ``force_extension``.
    ``uint8_input``: normalise inside the graph (ONNX, OpenVINO); the file's metadata says
    which preprocessing (the weights', else the architecture's default)."""
    path = Path(path)
    if fmt is not None and fmt in SUFFIXES and not force_extension:
        fitting = (SUFFIXES[fmt], *OTHER_SUFFIXES.get(fmt, ()))
        if path.suffix.lower() not in fitting:
            raise SuffixMismatch(f"{path.name!r} does not end in {SUFFIXES[fmt]}, the suffix "
                                 f"of {fmt} files; a tool would take it for another format: "
                                 f"name it {path.stem}{SUFFIXES[fmt]}, or force the extension")
    if fmt is None:
        by_suffix = {s: f for f, s in SUFFIXES.items()}
        if path.suffix not in by_suffix:
            raise ValueError(f"cannot tell the format from {path.name!r}: name the format "
                             f"({', '.join(FORMATS)}) or use a suffix "
                             f"{', '.join(SUFFIXES.values())}")
        fmt = by_suffix[path.suffix]
    spec = get_spec(name)
    if weights is None:
        model = load_model(name)
        pre = imagenet_default(spec.input_size[-1]) if spec.family == "imagenet" \
            else cifar_default(spec.input_size[-1])
        recorded = {"preprocess": pre.to_metadata()} if uint8_input else None
    else:
        clf = load_classifier(weights, name, allow_nonfinite=allow_nonfinite)
        model, pre = clf.model, clf.preprocessing
        recorded = {"classes": clf.classes, "preprocess": pre.to_metadata()}
    metadata = describe(name, recorded, uint8_input)
    _, h, w = spec.input_size
    return export_model(model, path, fmt, (model.in_chans, h, w), name=name, metadata=metadata,
                        uint8_input=pre if uint8_input else None)
