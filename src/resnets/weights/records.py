"""Weight records: where each published weight set lives and what goes with it.

A record names a model and a tag (``resnet50.tv2_in1k``: model, publisher and recipe,
dataset), the file (URL, sha256), its license, the dataset and its class names, the
preprocessing the weights expect, and the accuracy published for them with its source.
The tables below are our own literal data (read once from torchvision's weight enums and
the akamaster README; nothing is imported at run time). The weights this project trains
and ships are added from package data: every ``bundled/*.json`` file holds a list of
records in the format of :meth:`WeightRecord.to_dict` (full sha256 for those);
:func:`bundled_record` and :func:`add_bundled_records` write them from a trained run.

This module imports neither torch nor torchvision, so ``resnets weights list`` stays fast.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .preprocessing import Preprocessing

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

# Package data: the ImageNet-1k names (one a line, in class-index order) and the folder the
# bundled weights' records (and files) go in.
_PACKAGE = "resnets.weights"
IMAGENET_CLASSES_FILE = "imagenet1k_classes.txt"
BUNDLED_DIR = Path(__file__).parent / "bundled"


@dataclass(frozen=True)
class WeightRecord:
    """One weight set: the file, what it was trained on and how to feed it."""

    model: str  # registered model name
    tag: str  # "<model>.<source>_<dataset>", e.g. "resnet50.tv2_in1k"
    url: str  # https://, http://, file:// or "bundled:<file name>" (package data)
    sha256: str  # full hex digest, or the leading digits published in the file name; "" unknown
    license: str
    dataset: str  # "imagenet-1k", "cifar-10", ...
    preprocessing: Preprocessing
    top1: float | None = None  # published accuracy (%) on the dataset's test/val split
    top5: float | None = None
    accuracy_source: str = ""
    file_size: int | None = None  # exact bytes, when known (checked after a download)
    size_mb: float | None = None  # approximate size, as the publisher lists it
    recipe: str = ""  # where the training recipe is described
    default: bool = False  # the weights ``pretrained=True`` loads for this model
    class_names: tuple[str, ...] = field(default=(), repr=False)  # () = the dataset's names

    def __post_init__(self) -> None:
        if not self.tag.startswith(self.model + "."):
            raise ValueError(f"tag must start with the model name and a dot ({self.model}.), "
                             f"got {self.tag!r}")
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(f"sha256 of {self.tag} must be 8 to 64 lowercase hex digits, "
                             f"got {self.sha256!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def filename(self) -> str:
        """The file's name in the cache (the last part of the URL)."""
        return self.url.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.class_names or dataset_classes(self.dataset)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; standard class names are left out (the dataset names them)."""
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        d["class_names"] = list(self.class_names)
        if not d["class_names"]:
            del d["class_names"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightRecord:
        d = dict(d)
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        d["class_names"] = tuple(d.get("class_names", ()))
        return cls(**d)


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (shipped as package data)."""
    text = resources.files(_PACKAGE).joinpath(IMAGENET_CLASSES_FILE).read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise ValueError(f"{IMAGENET_CLASSES_FILE} must list 1000 class names, found "
                         f"{len(names)}")
    return names


def dataset_classes(dataset: str) -> tuple[str, ...]:
    """The standard class names of a dataset the records use."""
    if dataset == "imagenet-1k":
        return imagenet_classes()
    if dataset == "cifar-10":
        return CIFAR10_CLASSES
    raise ValueError(f"no standard class names for dataset {dataset!r}: expected "
                     "imagenet-1k or cifar-10, or give the record its class_names")


# --- torchvision: IMAGENET1K_V1 / _V2 of torchvision.models.*_Weights ------------------------
# URL, hash prefix (in the file name), acc@1 / acc@5, size and recipe are those the enums
# publish in their meta (torchvision 0.29). V1: resize 256, crop 224; V2: resize 232, crop
# 224; both bilinear with ImageNet mean/std. DEFAULT is V2 where a V2 exists.

_TV_URL = "https://download.pytorch.org/models/"
_TV_LICENSE = "BSD-3-Clause (torchvision); ImageNet-1k terms of access apply"
_TV_V1_PRE = Preprocessing(resize=256, crop=224)
_TV_V2_PRE = Preprocessing(resize=232, crop=224)
_TV_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_TV_RECIPE_V1_X = "https://github.com/pytorch/vision/tree/main/references/classification#resnext"
_TV_RECIPE_V1_W = "https://github.com/pytorch/vision/pull/912#issue-445437439"
_TV_RECIPE_V2 = "https://github.com/pytorch/vision/issues/3995#new-recipe"
_TV_RECIPE_V2_FIX = "https://github.com/pytorch/vision/issues/3995#new-recipe-with-fixres"


def _tv(model: str, enum: str, version: int, file: str, top1: float, top5: float,
        size_mb: float, recipe: str, preprocessing: Preprocessing, default: bool = False
        ) -> WeightRecord:
    return WeightRecord(
        model=model, tag=f"{model}.tv{'' if version == 1 else version}_in1k",
        url=_TV_URL + file, sha256=file.rsplit("-", 1)[1].split(".")[0],
        license=_TV_LICENSE, dataset="imagenet-1k", preprocessing=preprocessing,
        top1=top1, top5=top5,
        accuracy_source=f"torchvision {enum}.IMAGENET1K_V{version} (ImageNet-1k val, "
                        "single crop)",
        size_mb=size_mb, recipe=recipe, default=default)


_TORCHVISION = (
    _tv("resnet18", "ResNet18_Weights", 1, "resnet18-f37072fd.pth", 69.758, 89.078, 44.661,
        _TV_RECIPE_V1, _TV_V1_PRE, default=True),
    _tv("resnet34", "ResNet34_Weights", 1, "resnet34-b627a593.pth", 73.314, 91.420, 83.275,
        _TV_RECIPE_V1, _TV_V1_PRE, default=True),
    _tv("resnet50", "ResNet50_Weights", 1, "resnet50-0676ba61.pth", 76.130, 92.862, 97.781,
        _TV_RECIPE_V1, _TV_V1_PRE),
    _tv("resnet50", "ResNet50_Weights", 2, "resnet50-11ad3fa6.pth", 80.858, 95.434, 97.790,
        "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621", _TV_V2_PRE,
        default=True),
    _tv("resnet101", "ResNet101_Weights", 1, "resnet101-63fe2227.pth", 77.374, 93.546,
        170.511, _TV_RECIPE_V1, _TV_V1_PRE),
    _tv("resnet101", "ResNet101_Weights", 2, "resnet101-cd907fc2.pth", 81.886, 95.780,
        170.530, _TV_RECIPE_V2, _TV_V2_PRE, default=True),
    _tv("resnet152", "ResNet152_Weights", 1, "resnet152-394f9c45.pth", 78.312, 94.046,
        230.434, _TV_RECIPE_V1, _TV_V1_PRE),
    _tv("resnet152", "ResNet152_Weights", 2, "resnet152-f82ba261.pth", 82.284, 96.002,
        230.474, _TV_RECIPE_V2, _TV_V2_PRE, default=True),
    _tv("resnext50_32x4d", "ResNeXt50_32X4D_Weights", 1, "resnext50_32x4d-7cdf4587.pth",
        77.618, 93.698, 95.789, _TV_RECIPE_V1_X, _TV_V1_PRE),
    _tv("resnext50_32x4d", "ResNeXt50_32X4D_Weights", 2, "resnext50_32x4d-1a0047aa.pth",
        81.198, 95.340, 95.833, _TV_RECIPE_V2, _TV_V2_PRE, default=True),
    _tv("resnext101_32x8d", "ResNeXt101_32X8D_Weights", 1, "resnext101_32x8d-8ba56ff5.pth",
        79.312, 94.526, 339.586, _TV_RECIPE_V1_X, _TV_V1_PRE),
    _tv("resnext101_32x8d", "ResNeXt101_32X8D_Weights", 2, "resnext101_32x8d-110c445d.pth",
        82.834, 96.228, 339.673, _TV_RECIPE_V2_FIX, _TV_V2_PRE, default=True),
    # torchvision's only ResNeXt-101 64x4d weights are "V1" but use the new recipe and its
    # resize of 232.
    _tv("resnext101_64x4d", "ResNeXt101_64X4D_Weights", 1, "resnext101_64x4d-173b62eb.pth",
        83.246, 96.454, 319.318, "https://github.com/pytorch/vision/pull/5935", _TV_V2_PRE,
        default=True),
    _tv("wide_resnet50_2", "Wide_ResNet50_2_Weights", 1, "wide_resnet50_2-95faca4d.pth",
        78.468, 94.086, 131.820, _TV_RECIPE_V1_W, _TV_V1_PRE),
    _tv("wide_resnet50_2", "Wide_ResNet50_2_Weights", 2, "wide_resnet50_2-9ba9bcbe.pth",
        81.602, 95.758, 263.124, _TV_RECIPE_V2_FIX, _TV_V2_PRE, default=True),
    _tv("wide_resnet101_2", "Wide_ResNet101_2_Weights", 1, "wide_resnet101_2-32ee1156.pth",
        78.848, 94.284, 242.896, _TV_RECIPE_V1_W, _TV_V1_PRE),
    _tv("wide_resnet101_2", "Wide_ResNet101_2_Weights", 2, "wide_resnet101_2-d733dc28.pth",
        82.510, 96.020, 484.747, _TV_RECIPE_V2, _TV_V2_PRE, default=True),
)

# --- akamaster/pytorch_resnet_cifar10: the widely used CIFAR-10 ResNets ----------------------
# Their trainer.py feeds 32x32 test images as they are (ToTensor, no resize or crop) and
# normalises with ImageNet's mean/std. Accuracy = 100 - the test error in their README table.
# The 8 hex digits in their file names follow torchvision's naming, but whether they are
# sha256 prefixes could not be checked here (the files were unreachable), so sha256 is left
# empty: these files are not hash-checked.

AKAMASTER_CIFAR10 = Preprocessing(resize=None, crop=None)
_AKA_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_AKA_SOURCE = "akamaster/pytorch_resnet_cifar10 README (CIFAR-10 test)"


def _akamaster(model: str, file: str, top1: float) -> WeightRecord:
    return WeightRecord(
        model=model, tag=f"{model}.akamaster_cifar10", url=_AKA_URL + file, sha256="",
        license="BSD-2-Clause (akamaster/pytorch_resnet_cifar10)", dataset="cifar-10",
        preprocessing=AKAMASTER_CIFAR10, top1=top1, accuracy_source=_AKA_SOURCE,
        recipe="https://github.com/akamaster/pytorch_resnet_cifar10/blob/master/trainer.py")


_AKAMASTER = (
    _akamaster("resnet20", "resnet20-12fca82f.th", 91.73),  # 8.27% error
    _akamaster("resnet32", "resnet32-d509ac18.th", 92.63),  # 7.37%
    _akamaster("resnet44", "resnet44-014dd654.th", 93.10),  # 6.90%
    _akamaster("resnet56", "resnet56-4bfd9763.th", 93.39),  # 6.61%
    _akamaster("resnet110", "resnet110-1d1ed7c2.th", 93.68),  # 6.32%
    _akamaster("resnet1202", "resnet1202-f3b1deed.th", 93.82),  # 6.18%
)


def bundled_path(name: str) -> Path:
    """Where a bundled weights file (a record URL ``bundled:<name>``) lives."""
    return BUNDLED_DIR / name


def read_safetensors_metadata(path: str | Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file, values JSON-decoded where they parse;
    read from the header alone (no torch)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = f.read(size) if 0 < size < 100_000_000 else b""
    try:
        raw = json.loads(header).get("__metadata__") or {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"cannot read {path}: not a safetensors file") from None
    return decode_metadata(raw)


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """safetensors metadata values (strings) JSON-decoded where they parse."""
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return meta


def bundled_record(path: str | Path, *, tag: str, top1: float | None, accuracy_source: str,
                   license: str = "BSD-3-Clause", dataset: str = "cifar-10",
                   top5: float | None = None, default: bool = True) -> WeightRecord:
    """The record of a weights file that ``resnets train`` wrote, to ship in ``bundled/``:
    model, classes and preprocessing from its metadata; full sha256 and size from the file.
    Add it with :func:`add_bundled_records`."""
    import hashlib

    path = Path(path)
    meta = read_safetensors_metadata(path)
    if "model" not in meta or "preprocess" not in meta:
        raise ValueError(f"{path} lacks model/preprocess metadata: expected a "
                         "model.safetensors written by `resnets train`")
    classes = tuple(meta.get("classes") or ())
    if dataset in ("cifar-10", "imagenet-1k") and classes == dataset_classes(dataset):
        classes = ()  # the dataset's standard names; not repeated in the record
    return WeightRecord(
        model=meta["model"], tag=tag, url=f"bundled:{path.name}",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(), license=license,
        dataset=dataset, preprocessing=Preprocessing.from_dict(meta["preprocess"]), top1=top1,
        top5=top5, accuracy_source=accuracy_source, file_size=path.stat().st_size,
        default=default, class_names=classes)


def add_bundled_records(*new: WeightRecord, folder: Path | None = None) -> Path:
    """Add records (replacing those with the same tag) to ``bundled/records.json``,
    written atomically; the weight files go in the same folder."""
    from ..files import atomic_output

    folder = BUNDLED_DIR if folder is None else folder
    path = folder / "records.json"
    entries = json.loads(path.read_text("utf-8")) if path.exists() else []
    tags = {r.tag for r in new}
    entries = [e for e in entries if e.get("tag") not in tags] + [r.to_dict() for r in new]
    with atomic_output(path, make_parents=True) as tmp:
        tmp.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    all_records.cache_clear()
    return path


def bundled_records(folder: Path | None = None) -> tuple[WeightRecord, ...]:
    """Records of the weights shipped with the package: every ``bundled/*.json`` file holds
    a JSON list of :meth:`WeightRecord.to_dict` dicts. A missing folder means none."""
    folder = BUNDLED_DIR if folder is None else folder
    if not folder.is_dir():
        return ()
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            entries = json.loads(path.read_text("utf-8"))
            out.extend(WeightRecord.from_dict(d) for d in entries)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"invalid weight records in {path}: expected a JSON list of "
                             f"record dicts ({e})") from None
    return tuple(out)


@functools.cache
def all_records() -> dict[str, WeightRecord]:
    """Every known record by tag; bundled records come first so they become the defaults of
    the CIFAR models. A model has at most one default record."""
    records: dict[str, WeightRecord] = {}
    for rec in (*bundled_records(), *_TORCHVISION, *_AKAMASTER):
        if rec.tag in records:
            raise ValueError(f"weight tag {rec.tag!r} is defined twice")
        records[rec.tag] = rec
    defaults: dict[str, str] = {}
    for rec in records.values():
        if rec.default:
            if rec.model in defaults:
                raise ValueError(f"{rec.model} has two default weights: {defaults[rec.model]} "
                                 f"and {rec.tag}")
            defaults[rec.model] = rec.tag
    return records


def list_weights(pattern: str | None = None) -> list[str]:
    """Tags of all records, optionally filtered by a glob (``"resnet50*"``, ``"*in1k"``)."""
    tags = list(all_records())
    if pattern:
        tags = [t for t in tags if fnmatch.fnmatch(t, pattern)]
    return tags


def records_for(model: str) -> list[WeightRecord]:
    """The records of one model, default first."""
    recs = [r for r in all_records().values() if r.model == model]
    return sorted(recs, key=lambda r: not r.default)


def default_record(model: str) -> WeightRecord:
    """What ``pretrained=True`` loads for ``model``: its default record, else its first one
    (the akamaster CIFAR weights, until this project's bundled ones take the default)."""
    recs = records_for(model)
    if not recs:
        from ..models.registry import get_spec

        get_spec(model)  # an unknown name says so first (with the close ones)
        have = sorted({r.model for r in all_records().values()})
        raise ValueError(f"no pretrained weights are known for {model!r}; models with weights: "
                         f"{', '.join(have)} (or pass a file path or URL)")
    return recs[0]


def get_weights(tag: str) -> WeightRecord:
    """The record of ``tag``; a model name gives its default record."""
    records = all_records()
    if tag in records:
        return records[tag]
    if "." not in tag and any(r.model == tag for r in records.values()):
        return default_record(tag)
    model = tag.split(".", 1)[0]
    same_model = [t for t, r in records.items() if r.model == model]
    hint = (f"; {model} has {', '.join(same_model)}" if same_model
            else " (see `resnets weights list`)")
    raise ValueError(f"unknown weights {tag!r}{hint}")
