"""The one loader for classifiers: any weights source in, a ready model with its class names
and preprocessing out.

A source is a bundled model name (``"resnet56"``), a weight tag (``"resnet50.tv2_in1k"``), a
local file (safetensors from ``resnets train``; torchvision, timm or DataParallel state
dicts; akamaster's ``.th``; ``.pth.tar`` containers) or a URL. What the file does not say is
filled in from the next best place, and every assumption is kept in ``notes``:

- class names: the file's metadata, its weight record, the caller's ``class_hint`` (e.g.
  the folder being evaluated) when the count matches the head, ImageNet-1k's names for an
  ImageNet architecture with 1000 outputs, else the class indices;
- preprocessing: the file's metadata, its weight record, what its format implies
  (akamaster's files: ImageNet statistics at 32 px), else the architecture's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..devices import resolve_device
from ..models.registry import build_model, get_spec, list_models
from .loading import (
    HEAD,
    PEER_RENAMES,
    Source,
    load_state_dict_into,
    map_peer_keys,
    matching_architectures,
    read_source,
)
from .preprocessing import Preprocessing, cifar_default, imagenet_default
from .records import WeightRecord, all_records, default_record, imagenet_classes

# `predict` with no model: the best bundled classifier (the first that is shipped).
DEFAULT_MODELS = ("resnet56", "resnet20")
MAX_CLASSES = 100_000


@dataclass
class Classifier:
    """A model in eval mode with what it takes to use it."""

    model: nn.Module
    name: str                    # the registered architecture
    classes: list[str]
    preprocessing: Preprocessing
    source: str                  # the tag, file or URL the weights came from
    record: WeightRecord | None = None
    notes: list[str] = field(default_factory=list)  # what was assumed, one line each

    @property
    def family(self) -> str:
        return get_spec(self.name).family

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(N, C, H, W)`` (any size) to logits, preprocessed as the weights
        expect."""
        device = next(self.model.parameters()).device
        return self.model(self.preprocessing(images).to(device)).float()


def load_classifier(source: Source | None = None, model: str | None = None, *,
                    device: str | torch.device = "cpu", class_hint: list[str] | None = None,
                    allow_nonfinite: bool = False, progress: bool = True) -> Classifier:
    """Load a classifier from any source (see the module docstring).

    ``model`` names the architecture when the source does not (or picks a model's default
    weights when ``source`` is None); with neither, the best bundled classifier loads.
    """
    if isinstance(source, str) and source in list_models() and not Path(source).exists():
        # a model name: its default weights (for another model: refused as their tag is)
        named, source = source, None
        if model is not None and model != named:
            source = _default_record(named)
        model = model or named
    if source is None:
        source = _default_record(model)
    checkpoint, path, record, renamed = read_source(source, model, progress)
    meta = checkpoint.metadata
    state = checkpoint.state_dict
    name = _architecture(model, meta, record, state, path)
    if not renamed and model is None:  # the name came from the file: map peer keys now
        with torch.device("meta"):
            renamed = map_peer_keys(state, build_model(name))
    head = state.get(f"{HEAD}.weight")
    if head is None or head.dim() != 2:
        raise ValueError(f"weights {path.name} have no classifier ({HEAD}.weight): they hold "
                         "a backbone, not a classifier")
    num_classes = head.shape[0]
    notes: list[str] = []
    classes = _classes(meta, record, class_hint, num_classes, name, path, notes)
    preprocessing = _preprocessing(meta, record, renamed, name, path, notes)
    net = build_model(name, num_classes=num_classes)
    load_state_dict_into(net, state, label=path.name, model_name=name,
                         allow_nonfinite=allow_nonfinite, keep_head=True)
    label = record.tag if record is not None and not renamed else str(source)
    return Classifier(net.to(resolve_device(device)).eval(), name, classes, preprocessing,
                      label, record, notes)


def _default_record(model: str | None) -> WeightRecord:
    if model is not None:
        return default_record(model)
    records = all_records()
    for name in DEFAULT_MODELS:
        for rec in records.values():
            if rec.model == name and rec.url.startswith("bundled:"):
                return rec
    raise ValueError("no bundled classifier is installed: give a model name or weights")


def _architecture(model: str | None, meta: dict[str, Any], record: WeightRecord | None,
                  state: dict[str, torch.Tensor], path: Path) -> str:
    """The architecture: as given, else the file's, else the record's, else guessed."""
    named = meta.get("model")
    if model is not None:
        get_spec(model)  # an unknown name lists the close ones
        return model
    from ..models.sr import SR_MODELS

    if "resnets.sr" in meta or (isinstance(named, str) and named in SR_MODELS):
        raise ValueError(f"{path.name} holds super-resolution weights, not a classifier: run "
                         "them with `resnets upscale` or `resnets sr-eval`")
    if isinstance(named, str) and named:
        get_spec(named)
        return named
    if record is not None:
        return record.model
    guesses = matching_architectures(state)
    if not guesses:
        raise ValueError(f"weights {path.name} do not say which architecture they are for, "
                         "and they match none of the registered models: give the model name")
    if len(guesses) > 1 and any(k.startswith(tuple(PEER_RENAMES)) for k in state):
        # a peer's layout (akamaster's `linear.` head): they publish residual networks only
        guesses = [g for g in guesses if _residual(g)] or guesses
    if len(guesses) > 1:  # a plain net and its ResNet twin: the same parameters
        raise ValueError(f"weights {path.name} do not say which architecture they are for, "
                         f"and they fit {' and '.join(guesses)} alike (the same parameter "
                         "names and shapes): give the model name")
    return guesses[0]


def _residual(name: str) -> bool:
    with torch.device("meta"):
        return bool(getattr(build_model(name), "residual", True))


def metadata_classes(names: Any, outputs: int, where: str) -> list[str]:
    """The class names a file's metadata gives (weights, or an exported graph): a JSON list
    of names, one per output of the head; anything else is one error naming ``where``."""
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        shown = repr(names[:60]) if isinstance(names, str) else type(names).__name__
        raise ValueError(f"{where}: invalid classes metadata (expected a JSON list of class "
                         f"names, got {shown})")
    if len(names) != outputs:
        raise ValueError(f"{where}: its metadata lists {len(names)} class names but its head "
                         f"has {outputs} outputs")
    return list(names)


def _classes(meta: dict[str, Any], record: WeightRecord | None, hint: list[str] | None,
             n: int, name: str, path: Path, notes: list[str]) -> list[str]:
    if n < 1 or n > MAX_CLASSES:
        raise ValueError(f"weights {path.name} have a head of {n} outputs: expected 1 to "
                         f"{MAX_CLASSES}")
    if "classes" in meta:
        return metadata_classes(meta["classes"], n, f"weights {path.name}")
    if record is not None and record.num_classes == n:
        return list(record.classes)
    if hint is not None and len(hint) == n:
        notes.append(f"{path.name} names no classes: using the {n} class folders of the data")
        return list(hint)
    if n == 1000 and get_spec(name).family == "imagenet":
        notes.append(f"{path.name} names no classes: assuming ImageNet-1k's 1000 classes")
        return list(imagenet_classes())
    notes.append(f"{path.name} names no classes: showing class indices 0..{n - 1}")
    return [str(i) for i in range(n)]


def _preprocessing(meta: dict[str, Any], record: WeightRecord | None, renamed: bool, name: str,
                   path: Path, notes: list[str]) -> Preprocessing:
    for key in ("preprocess", "preprocessing"):
        if key in meta:
            try:
                pre = _sized(Preprocessing.from_dict(meta[key]), name)
            except ValueError as e:
                raise ValueError(f"weights {path.name}: invalid {key} metadata: {e}") from None
            channels = get_spec(name).input_size[0]  # what the network built here takes
            if len(pre.mean) != channels:
                raise ValueError(f"weights {path.name}: invalid {key} metadata: mean and std "
                                 f"for {len(pre.mean)} channels, but {name} takes {channels}")
            return pre
    if record is not None:
        return _sized(record.preprocessing, name)
    spec = get_spec(name)
    side = spec.input_size[-1]
    if renamed:  # akamaster's layout: their trainer fed 32 px images with ImageNet statistics
        notes.append(f"{path.name} is in akamaster's format: assuming their preprocessing "
                     f"(ImageNet mean/std at {side} px)")
        return Preprocessing(resize=side, crop=side)
    if spec.family == "imagenet":
        pre = imagenet_default(side)
        notes.append(f"{path.name} records no preprocessing: assuming ImageNet's "
                     f"({pre.describe()})")
        return pre
    pre = cifar_default(side)
    notes.append(f"{path.name} records no preprocessing: assuming CIFAR-10's "
                 f"({pre.describe()})")
    return pre


def _sized(pre: Preprocessing, name: str) -> Preprocessing:
    """A preprocessing that keeps the image size (akamaster's record) gets the
    architecture's input size, so batches of photos of any size stack."""
    if pre.input_size is not None:
        return pre
    side = get_spec(name).input_size[-1]
    return Preprocessing(resize=side, crop=side, interpolation=pre.interpolation,
                         mean=pre.mean, std=pre.std)


def load_model(name: str, weights: Source | None = None, allow_nonfinite: bool = False
               ) -> nn.Module:
    """Registry model ``name`` in eval mode: with ``weights`` loaded through
    :func:`load_classifier` (class count from the file), else freshly initialised (to
    export or time an architecture without trained weights)."""
    if weights is None:
        return build_model(name).eval()
    return load_classifier(weights, name, allow_nonfinite=allow_nonfinite).model
