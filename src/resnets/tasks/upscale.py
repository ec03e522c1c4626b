"""``resnets upscale``: super-resolve image files of any size with bounded memory.

A large image is cut into overlapping low-resolution tiles. Each tile is run with ``pad``
extra pixels of context on every side (discarded afterwards, so the network sees what it
would see in one piece), and neighbouring tiles are blended with linear ramps across their
``overlap``, so no seam shows. Grayscale stays grayscale, RGBA keeps its alpha (upscaled
bicubic; a PNG colour key, tRNS, becomes such an alpha), 16-bit grayscale is processed in
float and written as 16-bit (8-bit with an alpha). Every PNG is written
atomically: a temporary file in the output folder, then ``os.replace``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from ..data.io import open_image
from ..export.sr import SRBackend, load_sr_backend
from ..files import atomic_output
from ..models.imresize import to_uint8, upscale
from ..models.self_ensemble import LABEL as SELF_ENSEMBLE
from ..models.self_ensemble import SelfEnsemble

DEFAULT_TILE = 256  # low-resolution pixels per tile side
DEFAULT_OVERLAP = 16  # pixels two neighbouring tiles share, blended
DEFAULT_PAD = 16  # context pixels run around each tile and then discarded


@dataclass
class Picture:
    """An image as the upscaler works on it: float colour in [0, 1], optional alpha."""

    color: torch.Tensor  # (C, H, W), C = 1 (grayscale) or 3 (RGB)
    alpha: torch.Tensor | None = None  # (1, H, W)
    bits: int = 8  # 16 for 16-bit grayscale, written back as 16-bit
    icc_profile: bytes | None = None  # the input's colour profile, written with the result

    @property
    def size(self) -> tuple[int, int]:
        return self.color.shape[-2], self.color.shape[-1]


def _array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def load_picture(path: str | Path) -> Picture:
    """Read any image Pillow decodes, EXIF-rotated; a bad file raises a one-line ValueError."""
    return picture_from_image(open_image(path))


def picture_from_image(img: Image.Image) -> Picture:
    """A decoded Pillow image (any mode) as a :class:`Picture`, with its ICC profile when
    that describes the picture's colour (an RGB profile for RGB, a gray one for grayscale;
    not a CMYK one, whose pixels were converted without it)."""
    pic = _picture(img)
    icc = img.info.get("icc_profile")
    space = b"GRAY" if pic.color.shape[0] == 1 else b"RGB "
    if isinstance(icc, bytes) and icc[16:20] == space:  # the profile's data colour space
        pic.icc_profile = icc
    return pic


def _picture(img: Image.Image) -> Picture:
    mode = img.mode
    key = img.info.get("transparency")  # a PNG tRNS colour key: pixels of that value are clear
    if key is not None and mode in ("1", "L", "RGB"):
        img = img.convert("LA" if mode != "RGB" else "RGBA")  # Pillow applies the key
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        alpha = None if not isinstance(key, int) else \
            _array_to_tensor((arr != key).astype(np.float64))
        if mode.startswith("I;16") or arr.max() > 255:
            return Picture(_array_to_tensor(arr / 65535.0), alpha, bits=16)
        return Picture(_array_to_tensor(arr / 255.0), alpha)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        return Picture(_array_to_tensor(arr if arr.max() <= 1.0 else arr / 255.0), bits=16)
    if mode in ("1", "L"):
        return Picture(_array_to_tensor(np.asarray(img.convert("L")) / 255.0))
    if mode in ("LA", "La"):
        arr = np.asarray(img.convert("LA")) / 255.0
        return Picture(_array_to_tensor(arr[..., :1]), _array_to_tensor(arr[..., 1:]))
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        arr = np.asarray(img.convert("RGBA")) / 255.0
        return Picture(_array_to_tensor(arr[..., :3]), _array_to_tensor(arr[..., 3:]))
    return Picture(_array_to_tensor(np.asarray(img.convert("RGB")) / 255.0))


def _in_chans(model: nn.Module) -> int:
    return getattr(getattr(model, "config", None), "in_chans", 3)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def run_sr(model: nn.Module, x: torch.Tensor, scale: int) -> torch.Tensor:
    """Run ``model`` on one ``(C, H, W)`` image, whatever its channels, untiled.

    A grayscale image goes through an RGB model as three equal channels (averaged back);
    an RGB image goes through a 1-channel model one channel at a time.
    """
    chans, device = _in_chans(model), _device(model)
    x = x.to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        if x.shape[0] == chans:
            return model(x[None], scale)[0].float().cpu()
        if chans == 3 and x.shape[0] == 1:
            return model(x.expand(3, -1, -1)[None], scale)[0].mean(0, keepdim=True).float().cpu()
        if chans == 1:
            return model(x[:, None], scale)[:, 0].float().cpu()
    raise ValueError(f"expected a 1- or 3-channel image for a {chans}-channel model, got "
                     f"{x.shape[0]} channels")


def inference_model(model: nn.Module, backend: str | None = None, self_ensemble: bool = False,
                    threads: int | None = None, scales: tuple[int, ...] = ()) -> nn.Module:
    """``model`` as the tasks run it: through ``backend`` (:mod:`resnets.export.sr`, graphs
    for ``scales`` made now; None: as given), and averaged over the 8 poses of its input
    with ``self_ensemble`` (:class:`~resnets.models.self_ensemble.SelfEnsemble`)."""
    run = model if backend is None else load_sr_backend(backend, model, threads=threads,
                                                        scales=scales)
    return SelfEnsemble(run) if self_ensemble else run


def describe_inference(model: nn.Module) -> dict[str, str]:
    """What runs a model from :func:`inference_model`: ``backend`` (``torch`` for a plain
    module) and ``inference`` (``single pass`` or ``self-ensemble x8``)."""
    inner = model.model if isinstance(model, SelfEnsemble) else model
    return {"backend": inner.kind if isinstance(inner, SRBackend) else "torch",
            "inference": SELF_ENSEMBLE if isinstance(model, SelfEnsemble) else "single pass"}


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile`` sharing at least ``overlap``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def _ramp(length: int, ramp: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """Blending weights along one tile axis: linear ramps where a neighbour overlaps."""
    w = torch.ones(length)
    ramp = min(ramp, length)
    if ramp > 0:
        up = (torch.arange(ramp) + 0.5) / ramp  # strictly positive
        if at_start:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if at_end:
            w[length - ramp:] = torch.minimum(w[length - ramp:], up.flip(0))
    return w


def upscale_tensor(model: nn.Module, x: torch.Tensor, scale: int, tile: int | None = DEFAULT_TILE,
                   overlap: int = DEFAULT_OVERLAP, pad: int = DEFAULT_PAD,
                   on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Super-resolve a ``(C, H, W)`` float image in overlapping tiles (``tile=None``: whole).

    ``on_tile(done, total)`` is called after each tile (for a progress bar).
    """
    if tile is not None and tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    h, w = x.shape[-2], x.shape[-1]
    if tile is None or (h <= tile and w <= tile):
        out = run_sr(model, x, scale)
        if on_tile:
            on_tile(1, 1)
        return out
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    acc = torch.zeros(x.shape[0], h * scale, w * scale)
    weight = torch.zeros(1, h * scale, w * scale)
    total = len(ys) * len(xs)
    for i, (y0, x0) in enumerate((y, x_) for y in ys for x_ in xs):
        th, tw = min(tile, h), min(tile, w)
        cy0, cx0 = max(y0 - pad, 0), max(x0 - pad, 0)
        cy1, cx1 = min(y0 + th + pad, h), min(x0 + tw + pad, w)
        out = run_sr(model, x[:, cy0:cy1, cx0:cx1], scale)
        oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
        out = out[:, oy:oy + th * scale, ox:ox + tw * scale]
        wy = _ramp(th * scale, overlap * scale, y0 > 0, y0 + th < h)
        wx = _ramp(tw * scale, overlap * scale, x0 > 0, x0 + tw < w)
        w2 = wy[:, None] * wx[None, :]
        region = (slice(None), slice(y0 * scale, (y0 + th) * scale),
                  slice(x0 * scale, (x0 + tw) * scale))
        acc[region] += out * w2
        weight[region] += w2
        if on_tile:
            on_tile(i + 1, total)
    return acc / weight


def upscale_picture(model: nn.Module, pic: Picture, scale: int, tile: int | None = DEFAULT_TILE,
                    overlap: int = DEFAULT_OVERLAP, pad: int = DEFAULT_PAD,
                    on_tile: Callable[[int, int], None] | None = None) -> Picture:
    """The colour through the model (tiled), the alpha through bicubic."""
    color = upscale_tensor(model, pic.color, scale, tile, overlap, pad, on_tile).clamp(0, 1)
    alpha = None if pic.alpha is None else upscale(pic.alpha, scale).clamp(0, 1)
    return Picture(color, alpha, pic.bits, pic.icc_profile)


def to_pil(pic: Picture) -> Image.Image:
    """A picture as a Pillow image: 8-bit L/LA/RGB/RGBA, or 16-bit grayscale; its ICC
    profile (if any) in ``info``, where Pillow's PNG writer takes it from."""
    if pic.bits == 16 and pic.color.shape[0] == 1 and pic.alpha is None:
        arr = torch.floor(pic.color[0].double() * 65535 + 0.5).numpy().astype(np.uint16)
        img = Image.fromarray(arr)  # mode I;16, written as a 16-bit grayscale PNG
    else:
        planes = pic.color if pic.alpha is None else torch.cat([pic.color, pic.alpha])
        arr = to_uint8(planes).permute(1, 2, 0).numpy()
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
        img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode)
    if pic.icc_profile is not None:
        img.info["icc_profile"] = pic.icc_profile
    return img


def save_png(pic: Picture, path: str | Path) -> None:
    """Write a PNG atomically: a temporary file in the same folder, then ``os.replace``."""
    with atomic_output(path) as tmp:
        to_pil(pic).save(tmp, format="PNG")


@dataclass
class UpscaleResult:
    """One input file: where its output went, or why there is none."""

    source: Path
    output: Path | None = None
    in_size: tuple[int, int] | None = None  # (H, W)
    out_size: tuple[int, int] | None = None
    error: str | None = None


def output_path(source: Path, out_dir: Path | None, scale: int) -> Path:
    """``photo.jpg`` -> ``OUT_DIR/photo_x2.png`` (beside the input without ``out_dir``)."""
    return (out_dir or source.parent) / f"{source.stem}_x{scale}.png"


def _file_id(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of an existing file, the same however its path is spelled
    (relative or absolute, ``..``, links, a case-insensitive file system); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_output_folder(out: Path) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: a file in
    its place or on its path, or a nearest existing folder without write permission."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder is a file: {out}")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot make output folder {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write output folder {out}: {existing} is not writable")


def upscale_files(model: nn.Module, inputs: Sequence[str | Path], scale: int,
                  out_dir: str | Path | None = None, tile: int | None = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, pad: int = DEFAULT_PAD,
                  progress: bool = True) -> list[UpscaleResult]:
    """Upscale each file to a PNG; a file that fails gets an error, the others still run.

    A progress bar (on stderr, on a terminal) follows each image that takes more than one
    tile, with the time left (:class:`TileProgress`).
    """
    if tile is not None and tile <= overlap:  # before anything is read or made
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        _check_output_folder(out)  # made with the first result: a failed run leaves none
    results: list[UpscaleResult] = []
    written: dict[tuple[int, int], Path] = {}  # the file id of each result -> its input
    sources = {_file_id(Path(item)) for item in inputs} - {None}  # never written over
    for item in inputs:
        source = Path(item)
        result = UpscaleResult(source)
        try:
            target = output_path(source, out, scale)
            target_id = _file_id(target)
            earlier = written.get(target_id)
            if earlier is not None:
                raise ValueError(f"{source} would overwrite {target}, the result of "
                                 f"{earlier}: rename one of them")
            if target_id in sources:
                raise ValueError(f"{source} would overwrite {target}, an input of this run: "
                                 "write the results to another folder (-o)")
            pic = load_picture(source)
            result.in_size = pic.size
            with TileProgress(source.name, enabled=progress) as on_tile:
                up = upscale_picture(model, pic, scale, tile, overlap, pad, on_tile)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
            save_png(up, target)
            result.output, result.out_size = target, up.size
            written[_file_id(target)] = source
        except (ValueError, FileNotFoundError, OSError) as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        results.append(result)
    return results


def progress_console() -> Console:
    """Where progress bars go: stderr (stdout carries the results)."""
    return Console(stderr=True)


class TileProgress:
    """A rich progress bar over the tiles of one image, with elapsed and remaining time.

    Shown on a terminal only, and only once an image needs a second tile; its
    :meth:`update` is an ``on_tile`` callback for :func:`upscale_tensor`.
    """

    def __init__(self, label: str, enabled: bool = True, console: Console | None = None) -> None:
        self.label = label
        self.console = console or progress_console()
        self.enabled = enabled and self.console.is_terminal
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.started: float | None = None  # when the image's first tile began

    def __enter__(self) -> Callable[[int, int], None]:
        self.started = self.console.get_time()
        return self.update

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 1:
            return
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("tiles"), TimeElapsedColumn(), TextColumn("left"),
                TimeRemainingColumn(), console=self.console, transient=True,
                # every tile's time counts: rich's default 30 s window would keep a single
                # sample, and so no estimate, once a tile takes longer than that
                speed_estimate_period=math.inf)
            self.progress.start()
            self.task = self.progress.add_task(escape(f"upscaling {self.label}"), total=total)
            if self.started is not None:  # the bar appears after the first tile: count it
                self.progress.tasks[-1].start_time = self.started
        self.progress.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
