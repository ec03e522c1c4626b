"""``resnets sr-eval``: a super-resolution model on a benchmark folder, by the field's protocol.

The folder is either ``HR/`` + ``LR/`` subfolders (as ``matlab_ref/Set5/x2``; a folder with
``x2/``, ``x3/``, ``x4/`` inside, as ``matlab_ref/Set5``, is also accepted) or a folder of HR
images, which are mod-cropped and downscaled here with the MATLAB-style ``imresize``.
Each image is super-resolved, rounded to uint8 like a saved result, and scored on Y with
``scale`` pixels shaved (``resnets.metrics.sr``), beside bicubic from the same LR image.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.io import ImageReadError, is_image_file
from ..metrics.sr import SSIM_WINDOW, sr_psnr_ssim
from ..models.imresize import downscale, modcrop, to_float, to_uint8
from ..models.sr import Bicubic, check_scale, create_sr_model
from .upscale import describe_inference, inference_model, load_picture, run_sr

# ../shared/data/README.md, "Published PSNR / SSIM (Y channel)": (PSNR, SSIM) per method.
# Bicubic, SRCNN 9-5-5 and VDSR: Kim et al. 2016 (VDSR), Table 3. EDSR: Lim et al. 2017,
# Table 3. EDSR-baseline (16 blocks of 64): the x2/x4 figures later lightweight-SR
# comparisons cite for Lim et al. 2017's baseline; x3 is left out, not confirmed.
PUBLISHED: dict[tuple[str, int], dict[str, tuple[float, float]]] = {
    ("Set5", 2): {"Bicubic": (33.66, .9299), "SRCNN": (36.66, .9542), "VDSR": (37.53, .9587),
                  "EDSR-baseline": (37.99, .9604), "EDSR": (38.11, .9601)},
    ("Set5", 3): {"Bicubic": (30.39, .8682), "SRCNN": (32.75, .9090), "VDSR": (33.66, .9213),
                  "EDSR": (34.65, .9282)},
    ("Set5", 4): {"Bicubic": (28.42, .8104), "SRCNN": (30.48, .8628), "VDSR": (31.35, .8838),
                  "EDSR-baseline": (32.09, .8938), "EDSR": (32.46, .8968)},
    ("Set14", 2): {"Bicubic": (30.24, .8688), "SRCNN": (32.42, .9063), "VDSR": (33.03, .9124),
                   "EDSR-baseline": (33.57, .9175), "EDSR": (33.92, .9195)},
    ("Set14", 3): {"Bicubic": (27.55, .7742), "SRCNN": (29.28, .8209), "VDSR": (29.77, .8314),
                   "EDSR": (30.52, .8462)},
    ("Set14", 4): {"Bicubic": (26.00, .7027), "SRCNN": (27.49, .7503), "VDSR": (28.01, .7674),
                   "EDSR-baseline": (28.58, .7813), "EDSR": (28.80, .7876)},
}


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


@dataclass
class SREvaluation:
    """Per-image and mean scores of one model on one folder at one scale."""

    model: str
    scale: int
    data: str
    images: list[ImageScore]
    benchmark: str | None = None  # "Set5" or "Set14" when the folder is one of them
    errors: list[str] = field(default_factory=list)  # one "path: reason" per unread image
    backend: str = "torch"  # what ran the model (resnets.export.sr)
    inference: str = "single pass"  # or "self-ensemble x8": never mixed with single pass

    def mean(self) -> tuple[float, float]:
        if not self.images:
            return math.nan, math.nan
        return (_mean([i.psnr for i in self.images]), _mean([i.ssim for i in self.images]))

    def bicubic_mean(self) -> tuple[float, float]:
        if not self.images:
            return math.nan, math.nan
        return (_mean([i.bicubic_psnr for i in self.images]),
                _mean([i.bicubic_ssim for i in self.images]))

    def published(self) -> dict[str, tuple[float, float]] | None:
        return PUBLISHED.get((self.benchmark, self.scale)) if self.benchmark else None

    def to_dict(self) -> dict:
        """The JSON record: ``images``, ``mean`` and ``bicubic``, plus context (``inference``
        says whether ``mean`` is a single pass or a self-ensemble)."""
        (p, s), (bp, bs) = self.mean(), self.bicubic_mean()
        published = self.published()
        return {
            "model": self.model, "scale": self.scale, "data": self.data,
            "benchmark": self.benchmark, "backend": self.backend, "inference": self.inference,
            "images": [asdict(i) for i in self.images], "errors": self.errors,
            "mean": {"psnr": p, "ssim": s},
            "bicubic": {"psnr": bp, "ssim": bs},
            "published": None if published is None else
            {k: {"psnr": v[0], "ssim": v[1]} for k, v in published.items()},
        }


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def read_image_uint8(path: str | Path) -> torch.Tensor:
    """An image as uint8 ``(C, H, W)``: grayscale keeps one channel (it is its own Y),
    everything else becomes RGB (alpha dropped, 16-bit rounded to 8)."""
    return to_uint8(load_picture(path).color)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def benchmark_name(data: str | Path) -> str | None:
    """``Set5`` or ``Set14`` when a component of the path names one (to show published rows)."""
    for part in reversed(Path(data).resolve().parts):
        for name in ("Set5", "Set14"):
            if part.lower() == name.lower():
                return name
    return None


def load_pairs(data: str | Path, scale: int, errors: list[str] | None = None
               ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, hr, lr)`` uint8 pairs from an HR/LR folder or a folder of HR images.

    HR and LR images pair by name (:func:`_match_names`); a file without its partner is an
    error. An image that cannot be used (unreadable, smaller than the scale, an LR image
    whose size does not pair with its HR image) is left out with a ``path: reason`` line in
    ``errors`` (when given; otherwise the error is raised); when none is left, the error
    says why."""
    root = Path(data)
    if not root.is_dir():
        raise NotADirectoryError(f"expected a folder with HR/ and LR/ subfolders or of HR "
                                 f"images, got {root}" + ("" if root.exists() else
                                                          " (it does not exist)"))
    if not (root / "HR").is_dir() and (root / f"x{scale}" / "HR").is_dir():
        root = root / f"x{scale}"
    skipped: list[tuple[str, ValueError]] = []  # (path: reason, error) per image left out
    if (root / "HR").is_dir() and (root / "LR").is_dir():
        pairs = _paired(root, scale, errors, skipped)
        kind = "image pair"
    else:
        pairs = _hr_only(root, scale, errors, skipped)
        kind = "image"
    if not pairs:
        raise ValueError(_none_scored(kind, root, scale, skipped))
    return pairs


def _hr_only(root: Path, scale: int, errors: list[str] | None,
             skipped: list[tuple[str, ValueError]]
            ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    files = _image_files(root)
    if not files:
        raise FileNotFoundError(f"no images in {root}: expected HR/ and LR/ subfolders or "
                                f"image files")
    pairs = []
    for path in files:
        try:
            hr = _scorable(modcrop(read_image_uint8(path), scale), scale)
        except ValueError as e:  # ImageReadError, or too small for the scale
            skipped.append((_skip(path, e, errors), e))
            continue
        pairs.append((path.name, hr, downscale(hr, scale)))  # uint8 in, uint8 out, as MATLAB
    return pairs


class _SizeMismatch(ValueError):
    """An LR image whose size is not its HR image's (mod-cropped) size over the scale;
    ``fits``: the scale it does fit, if any."""

    def __init__(self, message: str, fits: int | None) -> None:
        super().__init__(message)
        self.fits = fits


def _none_scored(kind: str, root: Path, scale: int, skipped: list[tuple[str, ValueError]]
                 ) -> str:
    """Why no ``kind`` (``image``, ``image pair``) in ``root`` could be scored: each of
    ``skipped`` was left out."""
    n = len(skipped)
    lead = (f"the only {kind} in {root} could not be scored" if n == 1 else
            f"none of the {n} {kind}s in {root} could be scored")
    errors = [e for _, e in skipped]
    if all(isinstance(e, _SizeMismatch) for e in errors):
        fits = {e.fits for e in errors if isinstance(e, _SizeMismatch)}
        hint = f" (made at x{fits.pop()})" if len(fits) == 1 and None not in fits else ""
        return f"{lead}: its LR size does not match x{scale}{hint}" if n == 1 else \
            f"{lead}: their LR sizes do not match x{scale}{hint}"
    more = f" (and {n - 1} more left out)" if n > 1 else ""
    return f"{lead}: {skipped[0][0]}{more}"


def _scorable(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """``hr`` if SSIM can score it once ``scale`` pixels are shaved off each border."""
    h, w = hr.shape[-2], hr.shape[-1]
    least = SSIM_WINDOW + 2 * scale
    if min(h, w) < least:
        raise ValueError(f"image of {h}x{w} pixels is too small to score at x{scale}: expected "
                         f"at least {least}x{least} ({scale} pixels shaved at each border, "
                         f"then SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window)")
    return hr


def _skip(path: Path, e: ValueError, errors: list[str] | None) -> str:
    """Record why ``path`` is left out (``path: reason``, also returned), or raise without
    ``errors``."""
    reason = str(e)
    line = reason if isinstance(e, ImageReadError) or str(path) in reason else f"{path}: {reason}"
    if errors is None:
        if line == reason:
            raise e
        raise ValueError(line) from None
    errors.append(line)
    return line


def _paired(root: Path, scale: int, errors: list[str] | None,
            skipped: list[tuple[str, ValueError]]
           ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    pairs = []
    for hr_path, lr_path in _match_names(root):
        try:
            hr, lr = read_image_uint8(hr_path), read_image_uint8(lr_path)
            if hr.shape[0] != lr.shape[0] or not _lr_fits(hr, lr, scale):
                fits = None if hr.shape[0] != lr.shape[0] else next(
                    (s for s in (2, 3, 4) if _lr_fits(hr, lr, s)), None)
                raise _SizeMismatch(f"{lr_path} is {lr.shape[0]}x{lr.shape[-2]}x{lr.shape[-1]}, "
                                    f"expected {hr.shape[0]}x{hr.shape[-2] // scale}x"
                                    f"{hr.shape[-1] // scale} for {hr_path.name} at x{scale}",
                                    fits)
            hr = hr[..., : lr.shape[-2] * scale, : lr.shape[-1] * scale]  # mod-cropped if needed
            _scorable(hr, scale)
        except ValueError as e:
            skipped.append((_skip(lr_path, e, errors), e))
            continue
        pairs.append((hr_path.name, hr, lr))
    return pairs


def _lr_fits(hr: torch.Tensor, lr: torch.Tensor, scale: int) -> bool:
    """Whether ``lr`` is ``hr`` over ``scale``, as is or once ``hr`` is mod-cropped."""
    h, w = hr.shape[-2], hr.shape[-1]
    return (lr.shape[-2] * scale, lr.shape[-1] * scale) in {(h, w),
                                                             (h - h % scale, w - w % scale)}


# the suffix a name may carry in its own folder: img_001_SRF_4_HR / img_001_SRF_4_LR
# (MATLAB's benchmark files), babyx2 or baby_x2 for baby (DIV2K, BasicSR)
_HR_TOKEN = re.compile(r"[_-]HR$", re.IGNORECASE)
_LR_TOKEN = re.compile(r"[_-]LR$|[_-]?x[2-9]$", re.IGNORECASE)
_NAMING = ("expected one LR image per HR image, of the same name, or of that name with _LR "
           "for _HR or with an x2-style suffix: img_001_SRF_4_LR for img_001_SRF_4_HR, babyx2 "
           "for baby")


def _match_names(root: Path) -> list[tuple[Path, Path]]:
    """``root/HR`` and ``root/LR`` files paired by name, in HR order: the same stem, else
    the same stem once each folder's token (``_HR``, ``_LR``, ``x2``) is dropped. Never by
    position: two folders sorted apart pair the wrong images whenever one name is missing
    or one extends another (``photo1 < photo10``, but ``photo10x2 < photo1x2``)."""
    hr_dir, lr_dir = root / "HR", root / "LR"
    hr_files, lr_files = _image_files(hr_dir), _image_files(lr_dir)
    count = (f"expected as many images in {hr_dir} as in {lr_dir} (at least one), found "
             f"{len(hr_files)} and {len(lr_files)}")
    if not hr_files and not lr_files:
        raise ValueError(count)
    hr_left = _by_stem(hr_files, hr_dir)
    lr_left = _by_stem(lr_files, lr_dir)
    found = {stem: lr_left.pop(stem) for stem in list(hr_left) if stem in lr_left}
    lr_by_key = _by_key(lr_left, _LR_TOKEN, lr_dir)
    for key, stem in _by_key({s: hr_left[s] for s in hr_left if s not in found}, _HR_TOKEN,
                             hr_dir).items():
        if key in lr_by_key:
            found[stem] = lr_left.pop(lr_by_key[key])
    hr_unpaired = [hr_left[s] for s in hr_left if s not in found]
    if hr_unpaired or lr_left:
        problems = [_files(root, list(lr_left.values()), "no HR image of the same name"),
                    _files(root, hr_unpaired, "no LR image of the same name")]
        problems = [p for p in problems if p]
        lead = f"{count}: " if len(hr_files) != len(lr_files) else f"in {root}: "
        raise ValueError(f"{lead}{'; '.join(problems)} ({_NAMING})")
    return [(hr_left[stem], found[stem]) for stem in hr_left]


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    """Files by stem, in order; two files of one stem (``a.png``, ``a.jpg``) are an error."""
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise ValueError(f"{by_stem[path.stem].name} and {path.name} in {folder} have the same "
                             "name: expected one image per name, to pair HR and LR by name")
        by_stem[path.stem] = path
    return by_stem


def _by_key(files: dict[str, Path], token: re.Pattern[str], folder: Path) -> dict[str, str]:
    """Stems by their name less ``token``; two stems of one such name are an error."""
    by_key: dict[str, str] = {}
    for stem, path in files.items():
        key = token.sub("", stem)
        if key in by_key:
            raise ValueError(f"{files[by_key[key]].name} and {path.name} in {folder} both "
                             f"stand for {key!r}: expected one image per name, to pair HR "
                             "and LR by name")
        by_key[key] = stem
    return by_key


def _files(root: Path, files: list[Path], problem: str) -> str:
    """``LR/a.png has <problem>``, or ``LR/a.png, LR/b.png and 3 more have <problem>``."""
    if not files:
        return ""
    names = [str(p.relative_to(root)) for p in files]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{shown} {'has' if len(names) == 1 else 'have'} {problem}"


def super_resolve(model: nn.Module, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """A uint8 LR image through the model, rounded to uint8 like a saved result."""
    return to_uint8(run_sr(model, to_float(lr), scale))


def evaluate_sr(model: nn.Module, data: str | Path, scale: int, label: str = "model", *,
                backend: str | None = None, self_ensemble: bool = False,
                threads: int | None = None) -> SREvaluation:
    """Score ``model`` and bicubic on every readable image of ``data`` at ``scale``; the
    others are listed in ``errors``. ``backend`` runs the model (:mod:`resnets.export.sr`;
    ``auto``: the fastest exact one; None: as given), ``self_ensemble`` averages its 8 poses
    (:mod:`resnets.models.self_ensemble`); the result says which."""
    check_scale(model, scale)
    baseline = create_sr_model("bicubic")
    errors: list[str] = []
    pairs = load_pairs(data, scale, errors)
    plain_bicubic = isinstance(model, Bicubic) and not self_ensemble  # the baseline itself
    run = model if plain_bicubic else inference_model(
        model, backend, self_ensemble, threads, scales=(scale,) if pairs else ())
    scores = []
    for name, hr, lr in pairs:
        bic = sr_psnr_ssim(super_resolve(baseline, lr, scale), hr, scale)
        ours = bic if plain_bicubic else sr_psnr_ssim(super_resolve(run, lr, scale), hr, scale)
        scores.append(ImageScore(name, ours[0], ours[1], bic[0], bic[1]))
    how = describe_inference(run)
    if self_ensemble:
        label = f"{label}, {how['inference']}"
    return SREvaluation(label, scale, str(data), scores, benchmark_name(data), errors,
                        how["backend"], how["inference"])


def print_evaluation(result: SREvaluation) -> None:
    """The per-image table with the mean, then the published numbers when known."""
    from rich.markup import escape
    from rich.table import Table

    from ..terminal import result_console

    console = result_console()
    # the model label, folder and file names are the user's: escaped, not read as markup
    table = Table(title=escape(f"{result.model} x{result.scale} on {result.data} "
                               f"({result.backend}, {result.inference})"),
                  caption=f"Y channel (BT.601), {result.scale} px shaved, SSIM 11x11 "
                          f"Gaussian sigma 1.5")
    for col in ("image", "PSNR", "SSIM", "bicubic PSNR", "bicubic SSIM"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for i in result.images:
        table.add_row(escape(i.name), f"{i.psnr:.2f}", f"{i.ssim:.4f}", f"{i.bicubic_psnr:.2f}",
                      f"{i.bicubic_ssim:.4f}")
    (p, s), (bp, bs) = result.mean(), result.bicubic_mean()
    table.add_row("[bold]mean[/bold]", f"{p:.2f}", f"{s:.4f}", f"{bp:.2f}", f"{bs:.4f}",
                  end_section=True)
    console.print(table)
    published = result.published()
    if published is None:
        return
    ref = Table(title=f"published, {result.benchmark} x{result.scale} "
                      f"(Y channel, as each paper reports)")
    for col in ("method", "PSNR", "SSIM"):
        ref.add_column(col, justify="left" if col == "method" else "right")
    for method, (mp, ms) in published.items():
        ref.add_row(method, f"{mp:.2f}", f"{ms:.4f}")
    ref.add_row(f"[bold]{escape(result.model)} (this run)[/bold]", f"{p:.2f}", f"{s:.4f}")
    console.print(ref)
