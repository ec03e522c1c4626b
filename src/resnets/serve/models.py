"""What a server serves: a classifier and a super-resolution model, both loaded through the
package's one loaders and each run by its backend, chosen as ``resnets predict`` and
``resnets upscale`` choose theirs (:func:`~resnets.tasks.classify.classifier_backend`,
:func:`~resnets.export.sr.load_sr_backend`): ``auto`` is the fastest exact one installed."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from ..export.backends import Backend
from ..export.sr import load_sr_backend
from ..models.sr import SUPPORTED_SCALES, check_scale
from ..tasks.cam import grad_cam, heatmap_rgba
from ..tasks.classify import classifier_backend
from ..tasks.upscale import describe_inference, picture_from_image, to_pil, upscale_picture
from ..weights.classifier import Classifier, load_classifier
from ..weights.sr import get_sr_model
from .config import ServeConfig


@dataclass
class ServedModels:
    """The loaded models and how each is run."""

    classifier: Classifier
    run: Backend  # uint8 batch, resized and cropped -> logits
    sr_model: nn.Module  # called like the model, ``(x, scale)``: an SRBackend or the model
    sr_label: str
    device: str = "cpu"

    @property
    def scales(self) -> list[int]:
        return list(getattr(self.sr_model, "scales", None) or SUPPORTED_SCALES)

    def describe(self) -> dict:
        """The ``/v1/models`` answer."""
        clf = self.classifier
        return {"classifier": {"name": clf.name, "weights": clf.source, "backend": self.run.kind,
                               "classes": clf.classes,
                               "preprocess": clf.preprocessing.to_metadata()},
                "upscaler": {"name": self.sr_label, "scales": self.scales,
                             "backend": describe_inference(self.sr_model)["backend"]}}

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """A uint8 ``(3, H, W)`` picture resized and cropped to the model's uint8
        ``(3, size, size)`` input (the backend normalises it). Done before queueing, so a
        queue of large uploads holds small tensors, not full pictures."""
        return self.classifier.preprocessing.resize_crop(image)

    def classify(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Class probabilities of prepared inputs (:meth:`prepare`), run as one batch."""
        x = torch.stack(list(inputs))
        with torch.inference_mode():
            probs = self.run(x.to(self.device)).float().softmax(1).cpu()
        return list(probs)

    def cam_png(self, x: torch.Tensor, height: int, width: int) -> tuple[bytes, int]:
        """Grad-CAM of the top-1 class of a prepared input as an RGBA PNG over a
        ``height x width`` picture, and that class. Eager PyTorch, whatever the backend:
        Grad-CAM needs gradients."""
        clf = self.classifier
        result = grad_cam(clf.model, clf.preprocessing.normalize(x[None]).to(self.device))
        heat = heatmap_rgba(result.maps[0], height, width, clf.preprocessing)
        return png_bytes(heat), result.targets[0]

    def upscale_png(self, img: Image.Image, scale: int, tile: int) -> bytes:
        """``img`` upscaled ``scale`` times (tiled) as PNG bytes."""
        check_scale(self.sr_model, scale)
        up = upscale_picture(self.sr_model, picture_from_image(img), scale, tile=tile)
        return png_bytes(to_pil(up))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def load_models(config: ServeConfig) -> ServedModels:
    """Load what ``config`` names; errors are for people (unknown model, missing file)."""
    clf = load_classifier(config.weights, config.model, device=config.device)
    # the batcher runs one batch at a time, so the runtime is compiled for latency
    run = classifier_backend(clf, config.backend, config.calibration, throughput=False)
    sr_model, sr_label = get_sr_model(config.sr_model, config.sr_weights, config.device)
    scales = tuple(getattr(sr_model, "scales", None) or SUPPORTED_SCALES)
    # every scale's graph made now (from the model cache after the first start), so no
    # request waits for an export
    upscaler = load_sr_backend(config.sr_backend, sr_model, scales=scales)
    return ServedModels(clf, run, upscaler, sr_label, config.device)
