"""Evaluate and predict with a trained classifier.

A classifier is a model plus its class names and preprocessing, read from the metadata of
a safetensors file that ``resnets train`` wrote (or from the bundled weights).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data.io import ImageReadError, is_image_file, read_rgb
from .registry import create_model
from .train.data import Preprocess

BUNDLED_DIR = Path(__file__).parent / "weights" / "bundled"
# `resnets predict` with no model uses the bundled ResNet-56; until it is shipped, the
# best bundled model that is (the order below).
DEFAULT_PREDICT_MODELS = ("resnet56", "resnet20")


@dataclass
class Classifier:
    model: nn.Module
    name: str
    classes: list[str]
    preprocess: Preprocess
    weights: str


def bundled_weights_path(model: str) -> Path:
    """The bundled CIFAR-10 weights of ``model``; a clear error when none are shipped."""
    path = BUNDLED_DIR / f"{model}_cifar10.safetensors"
    if not path.exists():
        shipped = sorted(p.name.split("_cifar10")[0] for p in BUNDLED_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no bundled weights for {model!r} (bundled: "
                                f"{', '.join(shipped) or 'none yet'}); pass --weights FILE")
    return path


def load_classifier(model: str | None = None, weights: str | Path | None = None,
                    device: str | torch.device = "cpu") -> Classifier:
    """A model with its weights, classes and preprocessing.

    ``weights`` is a safetensors file written by ``resnets train`` (its metadata names the
    model); without it the bundled weights of ``model`` (default ResNet-56) are used.
    """
    from .train.checkpoint import read_weights

    if weights is None:
        if model is None:
            shipped = [m for m in DEFAULT_PREDICT_MODELS
                       if (BUNDLED_DIR / f"{m}_cifar10.safetensors").exists()]
            model = shipped[0] if shipped else DEFAULT_PREDICT_MODELS[0]
        weights = bundled_weights_path(model)
    state, meta = read_weights(weights)
    name = model or meta.get("model")
    if not name:
        raise ValueError(f"{weights} does not name its model: pass --model")
    classes = meta.get("classes")
    if not classes:
        raise ValueError(f"{weights} has no class names in its metadata (expected a file "
                         "written by `resnets train` or `resnets weights convert`)")
    pre = meta.get("preprocess")
    if pre is None:
        raise ValueError(f"{weights} has no preprocessing record in its metadata")
    net = create_model(name, num_classes=len(classes))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights {weights} do not fit {name}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]} (weights for another architecture?)")
    net = net.to(device).eval()
    return Classifier(net, name, list(classes), Preprocess.from_dict(pre), str(weights))


def prepare(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` (or ``(3, H, W)``) to the model's normalised input."""
    from torchvision.transforms.v2 import functional as TF

    from .data.augment import normalize

    if images.dim() == 3:
        images = images[None]
    if images.shape[-2:] != (pre.size, pre.size):
        images = TF.center_crop(TF.resize(images, pre.resize, antialias=True), pre.size)
    return normalize(images, pre.mean, pre.std)


@dataclass
class EvalReport:
    top1: float
    top5: float
    n: int
    per_class: dict[str, float]
    confusion: torch.Tensor  # (true, predicted) counts
    classes: list[str]
    skipped: list[str]

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "n": self.n, "per_class": self.per_class,
                "skipped": self.skipped}


@torch.no_grad()
def evaluate_folder(clf: Classifier, data: str | Path, batch_size: int = 256,
                    tta: bool = False, limit_per_class: int | None = None,
                    strict: bool = False) -> EvalReport:
    """Top-1/top-5, per-class accuracy and the confusion matrix on an ImageFolder tree."""
    from .data.folder import scan_folder

    root = Path(data)
    if (root / "test").is_dir() and not (root / clf.classes[0]).is_dir():
        root = root / "test"
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
            except ImageReadError:
                if strict:
                    raise
                skipped.append(str(p))
                continue
            imgs.append(prepare(img, clf.preprocess)[0])
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
    per_class = {c: (100.0 * confusion[i, i].item() / max(confusion[i].sum().item(), 1))
                 for i, c in enumerate(clf.classes)}
    return EvalReport(100.0 * (pred == y).float().mean().item(),
                      100.0 * (topk == y[:, None]).any(1).float().mean().item(),
                      len(y), per_class, confusion, clf.classes, skipped)


def write_confusion(report: EvalReport, out_dir: str | Path) -> tuple[Path, Path]:
    """The confusion matrix as CSV and PNG (rows: true class, columns: predicted)."""
    from .train.checkpoint import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *report.classes])
    for c, row in zip(report.classes, report.confusion.tolist(), strict=True):
        w.writerow([c, *row])
    csv_path, png_path = out / "confusion.csv", out / "confusion.png"
    atomic_write(csv_path, lambda p: p.write_text(buf.getvalue()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(report.classes)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.6 * n))
    ax.imshow(report.confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(n), report.classes, rotation=90)
    ax.set_yticks(range(n), report.classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"top-1 {report.top1:.2f}% (n={report.n})")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(report.confusion[i, j].item()), ha="center", va="center",
                        fontsize=7)
    fig.tight_layout()
    atomic_write(png_path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)
    return csv_path, png_path


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively for image files (sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
        else:
            out.append(p)
    return out


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability)


@torch.no_grad()
def predict(images: list[str | Path] | str | Path, model: str | None = None,
            weights: str | Path | None = None, top_k: int = 5, device: str = "cpu",
            batch_size: int = 64, backend: str = "torch",
            calibration: str | Path | None = None) -> tuple[list[Prediction], list[str]]:
    """Class probabilities for image files or folders: ``(predictions, errors)``.

    Unreadable files become one error line each; the others are still predicted.
    ``backend`` runs the same model in PyTorch (``torch``), onnxruntime fp32
    (``onnxruntime``) or onnxruntime int8 (``int8``, calibrated on ``calibration``: a folder
    of training images), always with the weights' own preprocessing.
    """
    if isinstance(images, (str, Path)):
        images = [images]
    clf = load_classifier(model, weights, device)
    run = clf.model
    if backend != "torch":
        if device != "cpu":
            raise ValueError(f"backend {backend!r} runs on the CPU; drop --device {device}")
        from .export.backends import load_backend

        pre = clf.preprocess
        run = load_backend(backend, clf.model, input_size=(3, pre.size, pre.size),
                           calibration=calibration, normalization=(pre.mean, pre.std))
    paths = collect_images(list(images))
    if not paths:
        raise ValueError("no images given (expected image files or folders of images)")
    k = max(1, min(top_k, len(clf.classes)))
    preds: list[Prediction] = []
    errors: list[str] = []
    for start in range(0, len(paths), batch_size):
        batch, names = [], []
        for p in paths[start:start + batch_size]:
            try:
                batch.append(prepare(read_rgb(p), clf.preprocess)[0])
                names.append(str(p))
            except (ImageReadError, FileNotFoundError) as e:
                errors.append(str(e))
        if not batch:
            continue
        probs = run(torch.stack(batch).to(device)).float().softmax(1).cpu()
        values, idx = probs.topk(k, 1)
        for name, v, i in zip(names, values.tolist(), idx.tolist(), strict=True):
            preds.append(Prediction(name, [(clf.classes[c], p) for c, p in zip(i, v,
                                                                                strict=True)]))
    return preds, errors
