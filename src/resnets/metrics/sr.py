"""PSNR and SSIM on the Y channel: the protocol behind published super-resolution tables.

The protocol (see ``../shared/data/README.md``): convert RGB to Y with BT.601 and round to
uint8 as MATLAB's ``rgb2ycbcr`` does (a single-channel image is used as Y directly), shave
``scale`` pixels from every border, then PSNR with peak 255 and SSIM as Wang et al.'s
``ssim_index.m``: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, valid
filtering, mean of the SSIM map. Everything is computed in float64.
"""

from __future__ import annotations

import math

import torch

# BT.601 for R, G, B in [0, 1] (MATLAB rgb2ycbcr): Y = 16 + 65.481 R + 128.553 G + 24.966 B
Y_COEFFS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
PEAK = 255.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """The Y channel of a uint8 ``(3, H, W)`` image as float64 ``(H, W)`` holding integers.

    A ``(1, H, W)`` image is already Y and is returned as it is (as float64).
    """
    if img.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 image (the saved 8-bit result), got {img.dtype}: "
                         f"round it with resnets.models.imresize.to_uint8 first")
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1, H, W) or (3, H, W) image, got shape "
                         f"{tuple(img.shape)}")
    x = img.double()
    if x.shape[0] == 1:
        return x[0]
    y = Y_OFFSET + sum(c / 255 * x[i] for i, c in enumerate(Y_COEFFS))
    return torch.floor(y.clamp(0, 255) + 0.5)  # imlincomb: saturate, round half up


def shave(img: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels from every side of the last two dimensions."""
    if border <= 0:
        return img
    h, w = img.shape[-2], img.shape[-1]
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"image of {h}x{w} pixels is too small to shave {border} pixels "
                         f"from each border")
    return img[..., border:h - border, border:w - border]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"expected two images of the same size, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = PEAK) -> float:
    """Peak signal-to-noise ratio in dB of two images on the 0..``peak`` scale."""
    _check_pair(a, b)
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """One factor of MATLAB's ``fspecial('gaussian', size, sigma)``, which is separable."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return g / g.sum()


def _valid_filter_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """``(n - k + 1, n)`` matrix whose product with a signal is its 'valid' correlation."""
    k = len(taps)
    cols = torch.arange(n - k + 1)[:, None] + torch.arange(k)[None, :]
    return torch.zeros(n - k + 1, n, dtype=torch.float64).scatter_(
        1, cols, taps.expand(n - k + 1, k).contiguous())


def ssim(a: torch.Tensor, b: torch.Tensor, peak: float = PEAK) -> float:
    """Mean SSIM of two single-channel ``(H, W)`` images (Wang et al. 2004, valid filtering)."""
    _check_pair(a, b)
    if a.dim() != 2:
        raise ValueError(f"expected single-channel (H, W) images, got shape {tuple(a.shape)}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {a.shape[0]}x{a.shape[1]}")
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    x, y = a.double(), b.double()
    g = _gaussian_1d().to(x.device)
    rows = _valid_filter_matrix(x.shape[0], g).to(x.device)
    cols = _valid_filter_matrix(x.shape[1], g).to(x.device)
    # filter2(gaussian, t, 'valid') for the five images at once, as two matrix products
    mu_x, mu_y, xx, yy, xy = rows @ torch.stack([x, y, x * x, y * y, x * y]) @ cols.T
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean().item()


def sr_psnr_ssim(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[float, float]:
    """PSNR and SSIM of a super-resolved uint8 image against its HR image, by the protocol.

    Both are ``(C, H, W)`` uint8 with C = 1 or 3; Y channel, ``scale`` pixels shaved.
    """
    _check_pair(sr, hr)
    y_sr, y_hr = shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr)
