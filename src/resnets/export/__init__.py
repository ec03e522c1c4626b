"""Fast inference and export: BN folding, channels-last, int8, ONNX and other formats.

- :func:`optimize`: an inference module (BN folded, channels-last, optional compile/bf16).
- :func:`load_backend`: any way of running a model as one callable, images to logits.
- :func:`export_model` / :func:`export_named`: ONNX, ``torch.export``, TorchScript,
  safetensors files, checked after writing and written atomically.
- :func:`quantize_model`: onnxruntime static int8, calibrated on real images (cached by
  :func:`resnets.export.int8.int8_session`, :mod:`resnets.export.model_cache`).
- :mod:`resnets.export.openvino`: OpenVINO fp32 and NNCF int8 (cached), and the IR format.
"""

from .backends import BACKENDS, Backend, load_backend
from .formats import FORMATS, ExportReport, export_model, export_named
from .int8 import Int8Report, quantize_model, quantize_onnx
from .onnx import MissingExtraError, export_onnx, ort_session
from .optimize import InferenceModule, fold_batchnorm, optimize

__all__ = ["BACKENDS", "FORMATS", "Backend", "ExportReport", "InferenceModule", "Int8Report",
           "MissingExtraError", "export_model", "export_named", "export_onnx", "fold_batchnorm",
           "load_backend", "optimize", "ort_session", "quantize_model", "quantize_onnx"]
