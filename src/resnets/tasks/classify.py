"""Evaluate and predict with a classifier (any source :func:`resnets.load_classifier` takes).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folder import scan_folder
from ..data.image_file import collect_images
from ..data.io import ImageReadError, read_rgb
from ..data.prefetch import Prefetch
from ..data.stream import Batch, image_batches
from ..export.backends import (
    AUTO,
    INT8,
    Backend,
    load_backend,
    resolve_backend,
    runtime_owns_cores,
)
from ..export.exported import ExportedClassifier, is_exported_file, load_exported
from ..export.openvino import OpenVinoFailure
from ..files import atomic_output
from ..weights.classifier import Classifier, load_classifier


def test_root(data: str | Path) -> Path:
    """The folder of class folders to evaluate on: ``data/test`` when ``data`` holds a
    ``test`` split, else ``data`` itself."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset not found: {root} (expected a folder of class "
                                "folders, or one holding test/)")
    test = root / "test"
    if test.is_dir() and ((root / "train").is_dir() or (root / "val").is_dir()):
        return test
    # a parent holding test/ alone: test/ is the split when it holds class folders
    if test.is_dir() and [d.name for d in root.iterdir() if d.is_dir()] == ["test"] \
            and any(d.is_dir() for d in test.iterdir()):
        return test
    return root


def folder_classes(data: str | Path) -> list[str]:
    """The class names (sorted folder names) of an ImageFolder tree."""
    return scan_folder(test_root(data)).classes


@dataclass
class EvalReport:
    top1: float
    top5: float
    n: int
    per_class: dict[str, float | None]  # None: no image of the class was scored
    confusion: torch.Tensor  # (true, predicted) counts
    classes: list[str]
    skipped: list[str]  # one "path: reason" line per unreadable image

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "n": self.n, "per_class": self.per_class,
                "skipped": self.skipped}


@torch.no_grad()
def evaluate_folder(clf: Classifier, data: str | Path, batch_size: int = 256,
                    tta: bool = False, limit_per_class: int | None = None,
                    strict: bool = False) -> EvalReport:
    """Top-1/top-5, per-class accuracy and the confusion matrix on an ImageFolder tree."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    root = test_root(data)
    index = scan_folder(root)
    if index.classes != clf.classes:
        raise ValueError(f"class folders of {root} ({', '.join(index.classes[:5])}...) do not "
                         f"match the model's classes ({', '.join(clf.classes[:5])}...)")
    paths, labels = index.paths, index.labels
    if limit_per_class is not None:
        kept: dict[int, int] = {}
        pairs = []
        for p, y in zip(paths, labels, strict=True):
            if kept.get(y, 0) < limit_per_class:
                kept[y] = kept.get(y, 0) + 1
                pairs.append((p, y))
        paths, labels = [p for p, _ in pairs], [y for _, y in pairs]
    device = next(clf.model.parameters()).device
    logits_all, labels_all, skipped = [], [], []
    for start in range(0, len(paths), batch_size):
        imgs, ys = [], []
        for p, y in zip(paths[start:start + batch_size], labels[start:start + batch_size],
                        strict=True):
            try:
                img = read_rgb(p)
            except ImageReadError as e:
                if strict:
                    raise
                skipped.append(str(e))  # "path: reason"
                continue
            imgs.append(clf.preprocessing(img))
            ys.append(y)
        if not imgs:
            continue
        x = torch.stack(imgs).to(device)
        logits = clf.model(x)
        if tta:
            logits = (logits + clf.model(x.flip(-1))) / 2
        logits_all.append(logits.float().cpu())
        labels_all.append(torch.tensor(ys))
    if not logits_all:
        raise ValueError(f"no readable images in {root}")
    logits = torch.cat(logits_all)
    y = torch.cat(labels_all)
    k = min(5, logits.shape[1])
    topk = logits.topk(k, 1).indices
    pred = topk[:, 0]
    n_cls = len(clf.classes)
    confusion = torch.zeros(n_cls, n_cls, dtype=torch.long)
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    # a class none of whose images could be read has no accuracy (None: n/a), not 0%
    per_class = {c: (100.0 * confusion[i, i].item() / confusion[i].sum().item()
                     if confusion[i].sum() else None) for i, c in enumerate(clf.classes)}
    return EvalReport(100.0 * (pred == y).float().mean().item(),
                      100.0 * (topk == y[:, None]).any(1).float().mean().item(),
                      len(y), per_class, confusion, clf.classes, skipped)


MAX_CONFUSION_INCHES = 25.0
MAX_NAMED_CLASSES = 100


def write_confusion(report: EvalReport, out_dir: str | Path) -> tuple[Path, Path]:
    """The confusion matrix as CSV and PNG (rows: true class, columns: predicted)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *report.classes])
    for c, row in zip(report.classes, report.confusion.tolist(), strict=True):
        w.writerow([c, *row])
    csv_path, png_path = out / "confusion.csv", out / "confusion.png"
    with atomic_output(csv_path) as tmp:
        tmp.write_text(buf.getvalue())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.classes)
    # 0.6 inch a class up to 40 classes; more share 25 inches (2,250 px at 90 dpi: 1,000
    # classes made a 54,000 px square, about 12 GB), without their names past 100
    side = min(1 + 0.6 * n, MAX_CONFUSION_INCHES)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(report.confusion.numpy(), cmap="Blues")
    if n <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(n), report.classes, rotation=90, fontsize=min(10, 400 / n))
        ax.set_yticks(range(n), report.classes, fontsize=min(10, 400 / n))
    ax.set(xlabel="predicted", ylabel="true", title=f"top-1 {report.top1:.2f}% (n={report.n})")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(report.confusion[i, j].item()), ha="center", va="center",
                        fontsize=7)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return csv_path, png_path


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability)


def predict(images: list[str | Path] | str | Path, source: str | Path | None = None,
            model: str | None = None, top_k: int = 5, device: str = "cpu",
            batch_size: int = 64, backend: str = "auto",
            calibration: str | Path | None = None) -> tuple[list[Prediction], list[str]]:
    """Class probabilities for image files or folders: ``(predictions, errors)``.

    ``source`` and ``model`` are what :func:`resnets.load_classifier` takes (default: the
    bundled ResNet-56); an exported ``.onnx`` or ``.xml`` file as ``source`` runs as it is
    (:func:`resnets.export.exported.load_exported`). Unreadable files become one error line
    each; the others are still predicted. ``backend`` is ``auto`` (the fastest exact fp32
    backend installed, :func:`resnets.export.backends.resolve_backend`) or any kind
    :func:`resnets.export.load_backend` takes; the int8 ones calibrate on ``calibration`` (a
    folder of training images), or else on the images being predicted. Always with the
    weights' own preprocessing.
    """
    if isinstance(images, (str, Path)):
        images = [images]
    paths = collect_images(list(images))
    if not paths:
        raise ValueError("no images given (expected image files or folders of images)")
    if source is not None and is_exported_file(source):
        return predict_exported(load_exported(source), paths, top_k, batch_size)
    clf = load_classifier(source, model, device=device)
    return predict_with(clf, paths, top_k, batch_size, backend, calibration)


def classifier_backend(clf: Classifier, backend: str = "auto",
                       calibration: str | Path | list[Path] | None = None,
                       model: torch.nn.Module | None = None, throughput: bool = True
                       ) -> Backend:
    """``clf``'s model (or ``model``, e.g. its pooled features) run by ``backend``, taking
    uint8 batches (resized and cropped by ``clf.preprocessing``) on the model's device; the
    backend normalises them (OpenVINO inside its graph, :func:`resnets.export.load_backend`
    with ``uint8_input``). The int8 kinds calibrate on ``calibration`` resized and cropped
    the same way. ``throughput``: compiled for many batches in a row (:meth:`Backend.map`);
    a server, which runs one batch at a time, asks for latency.

    ``auto`` resolves to the fastest exact backend installed; should that runtime fail to
    take the model, the PyTorch one (``optimized``) runs it, with a warning. Likewise ``int8``:
    should OpenVINO or NNCF fail to convert, quantize or compile it (:class:`OpenVinoFailure`),
    ``onnxruntime-int8`` runs it, with a warning that says why. A backend named outright
    runs as named or fails.
    """
    module = clf.model if model is None else model
    device = next(clf.model.parameters()).device
    kind = resolve_backend(backend, device)
    pre = clf.preprocessing
    side = pre.input_size
    if kind != "torch" and device.type != "cpu":
        raise ValueError(f"backend {kind!r} runs on the CPU, not on {device}")

    def load(k: str) -> Backend:
        return load_backend(k, module, input_size=(len(pre.mean), side, side),
                            calibration=calibration, normalization=(pre.mean, pre.std),
                            uint8_input=True, throughput=throughput, preprocessing=pre)

    if backend == INT8 and kind == "openvino-int8":
        try:
            return load(kind)
        except OpenVinoFailure as e:  # the runtime failed on this model, not the inputs
            warnings.warn(f"openvino-int8 failed on {clf.name} ({e}); running "
                          f"onnxruntime-int8 instead", stacklevel=2)
            return load("onnxruntime-int8")
    if backend != AUTO or kind in ("optimized", "torch"):
        return load(kind)
    try:
        return load(kind)
    except (ValueError, RuntimeError) as e:  # a converter that cannot take this model
        warnings.warn(f"{kind} cannot run {clf.name} ({e}); running it in PyTorch",
                      stacklevel=2)
        return load("optimized")


@torch.no_grad()
def predict_with(clf: Classifier, paths: list[Path], top_k: int = 5, batch_size: int = 64,
                 backend: str = "auto", calibration: str | Path | None = None,
                 workers: int | None = None, prefetched: Prefetch | None = None
                 ) -> tuple[list[Prediction], list[str]]:
    """:func:`predict` with a loaded classifier and a list of image files. Files are decoded
    on ``workers`` threads (:func:`resnets.data.stream.image_batches`) while the model runs
    (:meth:`resnets.export.backends.Backend.map`), starting while the backend loads;
    ``prefetched`` holds those a child process decoded ahead
    (:class:`resnets.data.prefetch.Prefetch`)."""
    batches = image_batches(paths, clf.preprocessing, batch_size, workers,
                            prefetched=prefetched)
    with contextlib.closing(batches):
        run = classifier_backend(clf, backend,
                                 calibration if calibration is not None else paths)
        device = next(clf.model.parameters()).device

        def logits(images: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
            return run.map(x.to(device) for x in images)

        note = functools.partial(size_mismatch_note, clf)
        with runtime_owns_cores(run.kind):
            return classify_batches(logits, clf.classes, batches, top_k, note)


def predict_exported(exported: ExportedClassifier, paths: list[Path], top_k: int = 5,
                     batch_size: int = 64, workers: int | None = None,
                     prefetched: Prefetch | None = None) -> tuple[list[Prediction], list[str]]:
    """:func:`predict` with an exported ONNX or OpenVINO file, its own classes and
    preprocessing (no PyTorch model involved)."""
    def logits(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        return (exported.run(exported.prepare(images)) for images in batches)

    batches = image_batches(paths, exported.preprocessing, batch_size, workers,
                            prefetched=prefetched)
    with runtime_owns_cores(exported.runtime):
        return classify_batches(logits, exported.classes, batches, top_k)


def classify_batches(logits: Callable[[Iterable[torch.Tensor]], Iterator[torch.Tensor]],
                     classes: list[str], batches: Iterable[Batch], top_k: int = 5,
                     note: Callable[[Path, tuple[int, int]], str | None] | None = None
                     ) -> tuple[list[Prediction], list[str]]:
    """Top-``k`` classes of every readable file: ``logits`` maps the uint8 images of
    ``batches`` (:func:`resnets.data.stream.image_batches`) to their logits, in order,
    reading them as they are decoded. ``note`` may return one warning about an image's size
    (the first is shown)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    k = min(top_k, len(classes))
    preds: list[Prediction] = []
    errors: list[str] = []
    decoded: deque[Batch] = deque()  # batches handed to ``logits`` and not yet answered
    warned = note is None

    def readable() -> Iterator[torch.Tensor]:
        nonlocal warned
        for batch in batches:
            errors.extend(batch.errors)
            if batch.images is None:
                continue
            if not warned:
                for p, size in zip(batch.paths, batch.sizes, strict=True):
                    if text := note(p, size):
                        warnings.warn(text, stacklevel=5)
                        warned = True
                        break
            decoded.append(batch)
            yield batch.images

    for out in logits(readable()):
        batch = decoded.popleft()
        probs = out.float().softmax(1).cpu()
        values, idx = probs.topk(k, 1)
        for path, v, i in zip(batch.paths, values.tolist(), idx.tolist(), strict=True):
            preds.append(Prediction(str(path), [(classes[c], p)
                                                for c, p in zip(i, v, strict=True)]))
    return preds, errors


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def size_mismatch_note(clf: Classifier, path: Path, size: tuple[int, int]) -> str | None:
    """A line for a small-input (CIFAR) network given a photo far larger than its input,
    which it sees shrunk to a few dozen pixels; None when the sizes are alike. ``size`` is
    the image's (height, width) as decoded."""
    side = clf.preprocessing.input_size
    if clf.family != "cifar" or side is None or min(size) <= 2 * side:
        return None
    trained = "CIFAR-10 images" if tuple(clf.classes) == CIFAR10_CLASSES else "images"
    h, w = size
    return (f"{clf.name} was trained on {side} px {trained}; {path} is {w}x{h} and is "
            f"shrunk to {side}x{side}, so predictions on photos like it are unreliable")


def write_predictions_csv(preds: list[Prediction], path: str | Path) -> Path:
    """One row per (image, rank): path, rank, class, probability; written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "rank", "class", "probability"])
    for p in preds:
        for rank, (c, prob) in enumerate(p.top, 1):
            w.writerow([p.path, rank, c, f"{prob:.6f}"])
    with atomic_output(path) as tmp:
        tmp.write_text(buf.getvalue())
    return Path(path)
