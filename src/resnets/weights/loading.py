"""Putting weights into a model: the one path every command and library caller takes.

``create_model(name, pretrained=...)``, :func:`resnets.load_classifier`, the SR loader,
``export``, ``bench`` and ``train --pretrained/--teacher`` all read a source through
:func:`read_source` and put its tensors into a model with :func:`load_state_dict_into`.

A source is ``True`` (the model's default weights), a tag (``"resnet50.tv_in1k"``, or just
``"tv_in1k"``), a record, a file path or a URL. The checkpoint is read safely and cleaned
(:mod:`.state_dict_io`), peer key names are mapped (akamaster's ``linear`` head is our
``fc``), the first conv is adapted when ``in_chans`` differs from the weights', and a head
of another size is left freshly initialised, with a message (timm's behaviour). Anything
else that does not fit is an error listing the keys, grouped by module.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from torchvision.transforms import v2

from ..models.registry import build_model, get_spec, list_models
from . import hub
from .preprocessing import Preprocessing
from .records import (
    WeightRecord,
    all_records,
    bundled_path,
    default_record,
    get_weights,
    records_for,
)
from .state_dict_io import (
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    Checkpoint,
    load_checkpoint,
    nonfinite_tensors,
    require_weights_file,
    save_safetensors,
)

Source = bool | str | os.PathLike[str] | WeightRecord
SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)

_log = logging.getLogger(__name__)

HEAD = "fc"  # the classifier's module name (torchvision's, and so every peer's we load)
# Peers whose checkpoints name modules otherwise: akamaster/pytorch_resnet_cifar10 calls the
# classifier ``linear``; every other key of theirs is ours already.
PEER_RENAMES = {"linear.": "fc."}


def resolve(source: Source, model_name: str | None = None, progress: bool = True
            ) -> tuple[Path, WeightRecord | None]:
    """The local file of ``source`` (downloaded and cached if needed) and its record."""
    if source is True:
        if model_name is None:
            raise ValueError("pretrained=True needs the model's name to pick its weights")
        record = default_record(model_name)
        return record_path(record, progress), record
    if isinstance(source, WeightRecord):
        _check_model(source, model_name)
        return record_path(source, progress), source
    if isinstance(source, os.PathLike):
        return _local_file(Path(source))
    if not isinstance(source, str) or not source:
        raise ValueError(f"pretrained must be True, a tag, a path or a URL, got {source!r}")
    record = _find_tag(source, model_name)
    if record is not None:
        return record_path(record, progress), record
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https"):
        path = hub.fetch(source, progress=progress)
        return path, _record_by_filename(path, hub.url_filename(source))
    if scheme == "file":
        return _local_file(Path(urllib.parse.unquote(urllib.parse.urlparse(source).path)))
    path = Path(source).expanduser()
    if path.exists() or "/" in source or os.sep in source or path.suffix.lower() in SUFFIXES:
        return _local_file(path)
    tags = [r.tag for r in records_for(model_name)] if model_name else []
    hint = f"; {model_name} has {', '.join(tags)}" if tags else " (see `resnets weights list`)"
    raise ValueError(f"unknown weights {source!r}: expected a tag, a file or a URL{hint}")


def _check_model(record: WeightRecord, model_name: str | None) -> None:
    if model_name is not None and record.model != model_name:
        raise ValueError(f"weights {record.tag} are for {record.model}, not {model_name}; "
                         f"{model_name} has: "
                         f"{', '.join(r.tag for r in records_for(model_name)) or 'none'}")


def _find_tag(text: str, model_name: str | None) -> WeightRecord | None:
    records = all_records()
    record = records.get(text)
    if record is None and model_name is not None:
        record = records.get(f"{model_name}.{text}")
    if record is not None:
        _check_model(record, model_name)
    return record


def _record_by_filename(path: Path, name: str | None = None) -> WeightRecord | None:
    """The published record of a file named as a published file (``name``, by default its
    own), when it is that file by the record's size and sha256 (where the record has them):
    a file of one's own saved under that name gets no record, nor its classes."""
    name = name or path.name
    return next((r for r in all_records().values() if r.filename == name
                 and hub.file_problem(path, r.sha256, r.file_size) is None), None)


def _local_file(path: Path) -> tuple[Path, WeightRecord | None]:
    require_weights_file(path, "a .safetensors, .pt or .pth file, a URL or a weights tag "
                               "(see `resnets weights list`)")
    return path, _record_by_filename(path)


def record_path(record: WeightRecord, progress: bool = True) -> Path:
    """The local file of a record: a bundled file (hash-checked) or the cached download."""
    if record.url.startswith("bundled:"):
        path = bundled_path(record.filename)
        if not path.is_file():
            raise FileNotFoundError(f"bundled weights {record.tag} are missing: expected "
                                    f"{path} (reinstall the package)")
        problem = hub.file_problem(path, record.sha256, record.file_size)
        if problem:
            raise ValueError(f"bundled weights {path} are damaged ({problem}): reinstall the "
                             "package")
        return path
    if record.url.startswith("file:"):
        return _local_file(Path(urllib.parse.unquote(urllib.parse.urlparse(record.url).path)))[0]
    return hub.fetch(record.url, sha256=record.sha256, file_size=record.file_size,
                     progress=progress)


def read_source(source: Source, model_name: str | None = None, progress: bool = True,
                model: nn.Module | None = None
                ) -> tuple[Checkpoint, Path, WeightRecord | None, bool]:
    """Resolve ``source``, read its file safely and clean its keys: ``(checkpoint, path,
    record, renamed)``; ``renamed`` says a peer's key names were mapped to ours (then the
    file is akamaster's layout)."""
    path, record = resolve(source, model_name, progress)
    checkpoint = load_checkpoint(path)
    if model is None and model_name is not None:
        with torch.device("meta"):
            model = build_model(model_name)
    renamed = map_peer_keys(checkpoint.state_dict, model) if model is not None else False
    return checkpoint, path, record, renamed


def load_pretrained(model: nn.Module, source: Source, model_name: str | None = None,
                    progress: bool = True, allow_nonfinite: bool = False
                    ) -> WeightRecord | None:
    """Load ``source`` into ``model`` in place; returns (and attaches as
    ``model.pretrained_record``) the record of the weights when one is known."""
    checkpoint, path, record, renamed = read_source(source, model_name, progress, model)
    label = record.tag if record else path.name
    load_state_dict_into(model, checkpoint.state_dict, label=label, model_name=model_name,
                         allow_nonfinite=allow_nonfinite)
    if record is None:
        record = _record_from_checkpoint(checkpoint, path, model_name, renamed)
    model.pretrained_record = record
    return record


def create_model(name: str, pretrained: bool | str | os.PathLike[str] | WeightRecord = False,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments go to the model class.

    ``pretrained`` loads weights: ``True`` (the model's default weights), a tag
    (``"resnet50.tv_in1k"``), a file path or a URL.

    >>> model = create_model("resnet50", num_classes=10)
    """
    model = build_model(name, **kwargs)
    if pretrained is not False and pretrained is not None:
        load_pretrained(model, pretrained, model_name=name)
    return model


def map_peer_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> bool:
    """Rename a peer's module names to ours in place (only when ours are absent); True if
    any key changed."""
    own = model.state_dict()  # on the meta device this allocates nothing
    changed = False
    for theirs, ours in PEER_RENAMES.items():
        has_theirs = any(k.startswith(theirs) for k in state_dict)
        has_ours = any(k.startswith(ours) for k in state_dict)
        if not has_theirs or has_ours or any(k.startswith(theirs) for k in own):
            continue
        for key in [k for k in state_dict if k.startswith(theirs)]:
            state_dict[ours + key[len(theirs):]] = state_dict.pop(key)
        changed = True
    return changed


def _record_from_checkpoint(checkpoint: Checkpoint, path: Path, model_name: str | None,
                            renamed: bool) -> WeightRecord | None:
    """What a local file says about itself: a tag in its metadata, the preprocessing our
    trainer saves, or akamaster's layout (CIFAR-10, ImageNet mean/std)."""
    meta = checkpoint.metadata
    tag = meta.get("tag")
    if isinstance(tag, str) and tag in all_records():
        return all_records()[tag]
    name = model_name or str(meta.get("model") or "")
    if not name:
        return None
    pre = meta.get("preprocess")
    if isinstance(pre, dict) and meta.get("classes"):
        try:
            preprocessing = Preprocessing.from_dict(pre)
        except ValueError:
            return None
        return WeightRecord(model=name, tag=f"{name}.{path.stem}", url=path.resolve().as_uri(),
                            sha256="", license="unknown", dataset="custom",
                            preprocessing=preprocessing,
                            class_names=tuple(map(str, meta["classes"])))
    if renamed:  # akamaster's layout: their record has the preprocessing
        return all_records().get(f"{name}.akamaster_cifar10")
    return None


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor],
                         label: str = "checkpoint", model_name: str | None = None,
                         allow_nonfinite: bool = False, keep_head: bool = False) -> None:
    """The package's one way to put tensors into a model: adapt the first conv to
    ``in_chans``, skip a head that does not fit (the model keeps a fresh one; with
    ``keep_head`` that is an error instead), refuse NaN/inf tensors unless
    ``allow_nonfinite``, and fail on any other mismatch, naming the keys."""
    what = model_name or type(model).__name__
    if not allow_nonfinite:
        refuse_nonfinite(state_dict, label)
    own = model.state_dict()
    state_dict = dict(state_dict)
    _adapt_first_conv(model, own, state_dict, label)
    fresh = frozenset() if keep_head else _drop_unfit_head(own, state_dict, label, what)
    _check_keys(own, state_dict, label, what, fresh)
    _check_shapes(own, state_dict, label, what)
    reset = getattr(model, "reset_classifier", None)
    if fresh and callable(reset) and hasattr(model, "num_classes"):
        reset(model.num_classes)  # after the checks: a refused load leaves the model as it was
    model.load_state_dict(state_dict, strict=False)


def refuse_nonfinite(state_dict: dict[str, torch.Tensor], label: str) -> None:
    """Raise when a floating-point tensor holds NaN or infinity."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise ValueError(f"weights {label} hold NaN or infinite values in {len(bad)} "
                         f"tensors (e.g. {', '.join(bad[:3])}): the run that wrote them "
                         "diverged; load them with allow_nonfinite to inspect")


def _check_shapes(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor],
                  label: str, what: str) -> None:
    wrong_shape = [f"{k} {list(state_dict[k].shape)} vs {list(own[k].shape)}"
                   for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    if wrong_shape:
        raise ValueError(f"weights {label} do not fit {what}: {len(wrong_shape)} tensors "
                         f"differ in shape (weights vs model): {'; '.join(wrong_shape[:5])}"
                         f"{'; ...' if len(wrong_shape) > 5 else ''}"
                         f"{_guess_hint(state_dict, what)}")


def _check_keys(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], label: str,
                what: str, fresh: frozenset[str] = frozenset()) -> None:
    """Fail, listing the keys grouped by top module, unless the key sets match (``fresh``
    keys stay as initialised; a missing BatchNorm ``num_batches_tracked`` is fine: old
    checkpoints lack it)."""
    missing = [k for k in own if k not in state_dict and k not in fresh
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        found = "; ".join(_grouped(kind, keys) for kind, keys in
                          (("missing", missing), ("unexpected", unexpected)) if keys)
        raise ValueError(f"weights {label} do not fit {what}: {found}"
                         f"{_guess_hint(state_dict, what)}")


def _guess_hint(state_dict: dict[str, torch.Tensor], what: str) -> str:
    guesses = matching_architectures(state_dict) if "conv1.weight" in state_dict else []
    if guesses and what not in guesses:
        return f" (the weights look like {' or '.join(guesses)})"
    return " (are they for another model, or built with other options?)"


def matching_architectures(state: dict[str, torch.Tensor]) -> list[str]:
    """The registered models whose parameter names and shapes match ``state``, ignoring the
    classifier (weights fine-tuned to other class counts still match); built on the meta
    device, so the search allocates nothing. More than one can match: a CIFAR plain net has
    its ResNet twin's parameters exactly (option A shortcuts hold none)."""
    heads = (HEAD + ".", *PEER_RENAMES)  # a peer's classifier too (akamaster's linear.)
    want = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(heads)}
    stem = want.get("conv1.weight", ())
    family = "cifar" if len(stem) == 4 and stem[-1] == 3 else "imagenet"  # 3x3 or 7x7 stem
    found = []
    for name in list_models():
        if get_spec(name).family != family:
            continue
        with torch.device("meta"):
            model = build_model(name)
        have = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.startswith(HEAD + ".")}
        if have == want:
            found.append(name)
    return found


def _grouped(kind: str, keys: list[str]) -> str:
    """``missing 3 keys: layer4 (2: layer4.0.conv1.weight, ...), fc (1: fc.bias)``"""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        groups[key.split(".", 1)[0]].append(key)
    parts = []
    for prefix, members in groups.items():
        shown = ", ".join(members[:2]) + (", ..." if len(members) > 2 else "")
        parts.append(f"{prefix} ({len(members)}: {shown})")
    return f"{kind} {len(keys)} keys: {', '.join(parts)}"


def _first_conv_key(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def _adapt_first_conv(model: nn.Module, own: dict[str, torch.Tensor],
                      state_dict: dict[str, torch.Tensor], label: str) -> None:
    """Weights for 3 input channels into a model with ``in_chans`` others: one channel
    takes the sum (a grey image then gives what its RGB copy gave); more channels repeat
    the RGB filters and scale them by 3 / in_chans (timm's rule)."""
    key = _first_conv_key(model)
    if key is None or key not in state_dict or key not in own:
        return
    weight, target = state_dict[key], own[key]
    if weight.shape == target.shape or weight.shape[0] != target.shape[0] \
            or weight.shape[2:] != target.shape[2:]:
        return
    have, want = weight.shape[1], target.shape[1]
    if want == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = -(-want // have)
        adapted = weight.repeat(1, repeats, 1, 1)[:, :want] * (have / want)
    state_dict[key] = adapted
    _log.warning("%s: first conv %s adapted from %d to %d input channels", label, key, have,
                 want)


def _drop_unfit_head(own: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor],
                     label: str, what: str) -> frozenset[str]:
    """Remove the weights' head when the model has none or one of another size; returns
    the model's head keys that keep a fresh initialisation (the caller re-initialises that
    head once the rest of the load is checked)."""
    prefix = HEAD + "."
    theirs = [k for k in state_dict if k.startswith(prefix)]
    if not theirs:
        return frozenset()
    ours = [k for k in own if k.startswith(prefix)]
    if not ours:  # num_classes=0 or features_only: no head to load into
        for key in theirs:
            del state_dict[key]
        _log.info("%s: classifier weights left out (%s has no %s)", label, what, HEAD)
        return frozenset()
    if all(k in own and state_dict[k].shape == own[k].shape for k in theirs):
        return frozenset()
    n_theirs = state_dict[f"{prefix}weight"].shape[0] if f"{prefix}weight" in state_dict else "?"
    for key in theirs:
        del state_dict[key]
    _log.warning("%s: the weights' classifier has %s classes, %s has %s: loaded the backbone, "
                 "re-initialised %s", label, n_theirs, what, own[f"{prefix}weight"].shape[0],
                 HEAD)
    return frozenset(ours)


# --- preprocessing -------------------------------------------------------------------------

def preprocessing_of(source: Any) -> Preprocessing:
    """The preprocessing of a tag, a model name (its default weights), a record, or a model
    that carries a ``pretrained_record``."""
    if isinstance(source, Preprocessing):
        return source
    if isinstance(source, WeightRecord):
        return source.preprocessing
    if isinstance(source, str):
        return get_weights(source).preprocessing
    if isinstance(source, nn.Module):
        record = getattr(source, "pretrained_record", None)
        if record is None:
            raise ValueError("this model carries no weight record (built without pretrained "
                             "weights, or from a file that names none): pass a tag instead, "
                             "e.g. get_transforms('resnet50.tv2_in1k')")
        return record.preprocessing
    raise ValueError(f"expected a tag, a model name, a WeightRecord or a model, got "
                     f"{type(source).__name__}")


def get_transforms(model_or_tag: Any) -> v2.Compose:
    """The evaluation transforms (torchvision ``transforms.v2``) that go with some weights:
    PIL image or uint8 tensor in, normalised float tensor out."""
    return preprocessing_of(model_or_tag).transforms()


# --- conversion ----------------------------------------------------------------------------

def convert(source: Source, out: str | os.PathLike[str], model_name: str | None = None,
            progress: bool = True, allow_nonfinite: bool = False) -> Path:
    """Write any loadable checkpoint as a clean safetensors file with metadata (tag, model,
    source file and its sha256, and the source's own plain entries). With ``model_name``
    the keys are mapped to that model and checked against it, names and shapes (the head
    may have any class count). NaN or infinite tensors are refused unless
    ``allow_nonfinite``."""
    from .. import __version__

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"expected an output path ending in .safetensors, got {out.name!r}")
    path, record = resolve(source, model_name, progress)
    checkpoint = load_checkpoint(path)
    state_dict = checkpoint.state_dict
    label = record.tag if record else path.name
    if not allow_nonfinite:
        refuse_nonfinite(state_dict, label)
    if model_name is not None:
        with torch.device("meta"):
            model = build_model(model_name)
        renamed = map_peer_keys(state_dict, model)
        own = model.state_dict()
        _check_keys(own, state_dict, label, model_name)
        _check_shapes({k: v for k, v in own.items() if not k.startswith(HEAD + ".")},
                      state_dict, label, model_name)
        if record is None:
            record = _record_from_checkpoint(checkpoint, path, model_name, renamed)
    metadata: dict[str, Any] = {"format": "pt", "source": path.name,
                                "source_sha256": hub.sha256_of(path),
                                "converted_by": f"resnets {__version__}"}
    if model_name or record:
        metadata["model"] = model_name or record.model
    if record is not None:
        # "classes" and "preprocess" in the layout `resnets train` writes: `resnets eval`
        # and `predict` read converted files as they read trained ones.
        metadata.update(tag=record.tag, dataset=record.dataset,
                        preprocessing=record.preprocessing.to_dict(),
                        classes=list(record.classes),
                        preprocess=_file_preprocess(record.preprocessing, record.model))
    for key, value in checkpoint.metadata.items():  # e.g. best_prec1, or a run's classes
        metadata.setdefault(key, value)
    return save_safetensors(state_dict, out, metadata)



def _file_preprocess(pre: Preprocessing, model_name: str) -> dict[str, Any]:
    """``pre`` in the weights-file layout; a record without sizes (akamaster's: images as
    they are) gets the architecture's input size."""
    if pre.input_size is None:
        side = get_spec(model_name).input_size[-1]
        pre = Preprocessing(resize=side, crop=side, interpolation=pre.interpolation,
                            mean=pre.mean, std=pre.std)
    return pre.to_metadata()
