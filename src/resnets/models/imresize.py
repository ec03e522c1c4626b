"""How super-resolution benchmarks made their inputs: ``modcrop`` and MATLAB's bicubic ``imresize``.

Set5, Set14 and the papers that report on them made each low-resolution image with MATLAB's
``imresize(hr, 1/s, 'bicubic')``: Keys' cubic kernel with a = -0.5, border pixels replicated
(MATLAB clamps the indices), and when shrinking the kernel is stretched by the scale
(antialiasing), so a x4 downscale averages over 16 input pixels per axis instead of 4. This
module ports that algorithm to tensors, batched, on any device. Pillow's BICUBIC uses the same
kernel but treats the borders differently; torch's ``interpolate(mode="bicubic")`` uses
a = -0.75.

As in MATLAB, the output has the input's type: a float image stays float (no clipping or
rounding), a uint8 image is rounded to uint8 after *each* of the two 1-D passes. Both details
matter: with them, ``downscale`` reproduces all 57 LR files of ``matlab_ref`` (Set5 and Set14,
x2/x3/x4) bit for bit; without the intermediate rounding it matches them to 56-58 dB, and
mirrored instead of replicated borders cost up to 11 grey levels on the border pixels.
Float images are in [0, 1]; ``to_uint8`` rounds the way MATLAB's ``im2uint8`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CUBIC_SUPPORT = 4.0  # the a = -0.5 cubic is non-zero on (-2, 2)
_BLOCK = 256  # output pixels per matrix product in _resize_axis


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``cubic``."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output pixel: the input indices it reads (clamped at the borders) and weights.

    Follows MATLAB's ``contributions`` (1-based coordinates, then converted to 0-based).
    """
    widen = antialias and scale < 1
    kernel_width = CUBIC_SUPPORT / scale if widen else CUBIC_SUPPORT
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if widen else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # MATLAB clamps the indices, which replicates the border pixels (some ports mirror)
    idx0 = (idx.long() - 1).clamp(0, in_len - 1)
    used = weights.ne(0).any(dim=0)  # MATLAB drops all-zero columns; values do not change
    return idx0[:, used], weights[:, used]


def _resize_axis(x: torch.Tensor, axis: int, out_len: int, scale: float, antialias: bool
                 ) -> torch.Tensor:
    """Resize float64 ``x`` along height (axis -2) or width (axis -1).

    Each block of output pixels is one matrix product with the band of input pixels it
    reads: few large operations (fast on a busy CPU and on a GPU), memory bounded for large
    images. float64 throughout, so no TF32 or bf16 matmul setting can change the result.
    """
    idx, weights = _contributions(x.shape[axis], out_len, scale, antialias)
    pieces = []
    for start in range(0, out_len, _BLOCK):
        block_idx, block_w = idx[start:start + _BLOCK], weights[start:start + _BLOCK]
        lo, hi = int(block_idx.min()), int(block_idx.max()) + 1
        band = torch.zeros(len(block_idx), hi - lo, dtype=torch.float64)
        rows = torch.arange(len(block_idx))[:, None].expand_as(block_idx)
        band.index_put_((rows, block_idx - lo), block_w, accumulate=True)  # clamped taps add
        band = band.to(x.device)
        if axis == -2:
            pieces.append(band @ x[..., lo:hi, :])
        else:
            pieces.append(x[..., lo:hi] @ band.T)
    return torch.cat(pieces, dim=axis)


def _check_image(x: torch.Tensor) -> None:
    if x.dim() not in (3, 4):
        raise ValueError(f"expected an image tensor (C, H, W) or a batch (N, C, H, W), "
                         f"got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise ValueError(f"expected a float image in [0, 1] or a uint8 image, got {x.dtype}")


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """Saturate to [0, 255] and round half up, as MATLAB stores a uint8 result."""
    return torch.floor(x.clamp(0, 255) + 0.5).to(torch.uint8)


def imresize(x: torch.Tensor, scale: float | tuple[float, float] | None = None,
             size: tuple[int, int] | None = None, antialias: bool = True) -> torch.Tensor:
    """MATLAB's ``imresize(x, scale, 'bicubic')`` on ``(C, H, W)`` or ``(N, C, H, W)``.

    Give ``scale`` (output size ``ceil(scale * input)``, as MATLAB), ``size`` (scale =
    size / input), or both (the scale sets the kernel, the size the output length). As in
    MATLAB, the axis shrunk most is resized first, height first on a tie. Everything is
    computed in float64; float images come back in their dtype, not clipped or rounded,
    uint8 images are rounded after each pass.
    """
    _check_image(x)
    in_hw = (x.shape[-2], x.shape[-1])
    if scale is None and size is None:
        raise ValueError("imresize needs a scale or an output size, got neither")
    if scale is None:
        scales = (size[0] / in_hw[0], size[1] / in_hw[1])
    else:
        scales = (float(scale), float(scale)) if isinstance(scale, (int, float)) else scale
    if min(scales) <= 0:
        raise ValueError(f"expected a positive scale, got {scales}")
    if size is None:
        size = (math.ceil(scales[0] * in_hw[0]), math.ceil(scales[1] * in_hw[1]))
    dtype = x.dtype
    order = (-2, -1) if scales[0] <= scales[1] else (-1, -2)
    out = x.double()
    for axis in order:
        out = _resize_axis(out, axis, size[axis], scales[axis], antialias)
        if dtype == torch.uint8:
            out = _round_uint8(out).double()
    return out.to(dtype)


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom and right so that height and width are multiples of ``scale``."""
    h, w = x.shape[-2], x.shape[-1]
    if h < scale or w < scale:
        raise ValueError(f"image of {h}x{w} pixels is smaller than the scale {scale}")
    return x[..., : h - h % scale, : w - w % scale]


def downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The benchmark LR image: bicubic with antialiasing to exactly 1/``factor`` of the size."""
    h, w = x.shape[-2], x.shape[-1]
    if h % factor or w % factor:
        raise ValueError(f"expected height and width divisible by {factor}, got {h}x{w}: "
                         f"modcrop(x, {factor}) first")
    return imresize(x, 1 / factor, size=(h // factor, w // factor))


def upscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upscale by an integer factor (the baseline, and the input of VDSR and EDSR).

    Under ``torch.compile`` and ``torch.export`` (the ONNX and OpenVINO exports) this is
    :func:`upscale_by_convolution`, which traces with free height and width; in eager mode
    it is :func:`imresize`, computed in float64.
    """
    if torch.compiler.is_compiling():
        return upscale_by_convolution(x, factor)
    return imresize(x, float(factor), size=(x.shape[-2] * factor, x.shape[-1] * factor))


def _phase_weights(factor: int, device: torch.device | None = None) -> torch.Tensor:
    """``(factor, 5)`` float64: the taps on input pixels k-2..k+2 that give output pixel
    ``factor * k + p`` of a bicubic upscale, one row per phase ``p`` (MATLAB's
    ``contributions`` for an integer scale, where every output pixel of a phase sits at the
    same offset from its input pixel). Made on ``device``: under ``torch.compile`` a tensor
    made on the CPU puts CPU operations into a GPU graph, which keeps CUDA graphs off."""
    p = torch.arange(1, factor + 1, dtype=torch.float64, device=device)
    offset = p / factor + 0.5 * (1 - 1 / factor) - 1  # output centre minus input pixel k
    dist = offset[:, None] - torch.arange(-2, 3, dtype=torch.float64, device=device)[None, :]
    weights = _cubic(dist)
    return weights / weights.sum(dim=1, keepdim=True)


def _upscale_axis(x: torch.Tensor, factor: int, axis: int) -> torch.Tensor:
    """``(N, C, H, W)`` float upscaled along height (-2) or width (-1) by ``factor``."""
    n, c, h, w = x.shape
    taps = _phase_weights(factor, x.device).to(x.dtype)
    planes = x.reshape(n * c, 1, h, w)
    if axis == -2:
        padded = F.pad(planes, (0, 0, 2, 2), mode="replicate")  # MATLAB clamps the indices
        out = F.conv2d(padded, taps.view(factor, 1, 5, 1))  # (N*C, factor, H, W)
        return out.permute(0, 2, 1, 3).reshape(n, c, h * factor, w)
    padded = F.pad(planes, (2, 2, 0, 0), mode="replicate")
    out = F.conv2d(padded, taps.view(factor, 1, 1, 5))  # (N*C, factor, H, W)
    return out.permute(0, 2, 3, 1).reshape(n, c, h, w * factor)


def upscale_by_convolution(x: torch.Tensor, factor: int) -> torch.Tensor:
    """:func:`upscale` as two strided-phase convolutions with replicated borders, in the
    input's dtype: the same kernel and borders (equal to float rounding), written with
    operations every exporter takes for any height and width."""
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float batch (N, C, H, W), got shape {tuple(x.shape)} "
                         f"of {x.dtype}")
    if torch.is_autocast_enabled(x.device.type):  # e.g. compiled bf16 training: the skip
        with torch.autocast(x.device.type, enabled=False):  # stays in the input's dtype
            return _upscale_axis(_upscale_axis(x, factor, -2), factor, -1)
    return _upscale_axis(_upscale_axis(x, factor, -2), factor, -1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float image to uint8, clipped and rounded half up like MATLAB's ``im2uint8``."""
    return _round_uint8(x * 255)


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A uint8 image to float in [0, 1]."""
    return x.to(dtype) / 255
