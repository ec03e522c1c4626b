import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnets.metrics.sr import psnr, rgb_to_y, shave, sr_psnr_ssim, ssim
from resnets.models.imresize import to_uint8, upscale
from tests.conftest import shared_path

# ../shared/data/README.md, "Published PSNR / SSIM": the Bicubic column.
PUBLISHED_BICUBIC = {("Set5", 2): (33.66, .9299), ("Set5", 3): (30.39, .8682),
                     ("Set5", 4): (28.42, .8104), ("Set14", 2): (30.24, .8688),
                     ("Set14", 3): (27.55, .7742), ("Set14", 4): (26.00, .7027)}




def _read(path) -> torch.Tensor:
    arr = np.asarray(Image.open(path))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


@pytest.mark.parametrize("set_name,scale", list(PUBLISHED_BICUBIC))
def test_bicubic_baseline_reproduces_published_numbers(set_name, scale):
    # Measured (float bicubic from the MATLAB LR files, rounded once to uint8):
    # Set5 33.646/.9293, 30.388/.8678, 28.419/.8102; Set14 30.223/.8684, 27.534/.7738,
    # 25.994/.7024 for x2/x3/x4.
    root = shared_path("sr", "matlab_ref", set_name, f"x{scale}")
    scores = []
    for hr_path, lr_path in zip(sorted((root / "HR").glob("*.png")),
                                sorted((root / "LR").glob("*.png")), strict=True):
        hr, lr = _read(hr_path), _read(lr_path)
        sr = to_uint8(upscale(lr.float() / 255, scale))
        scores.append(sr_psnr_ssim(sr, hr, scale))
    mean_psnr = sum(p for p, _ in scores) / len(scores)
    mean_ssim = sum(s for _, s in scores) / len(scores)
    ref_psnr, ref_ssim = PUBLISHED_BICUBIC[(set_name, scale)]
    assert abs(mean_psnr - ref_psnr) <= 0.02, f"{mean_psnr:.4f} vs {ref_psnr}"
    assert abs(mean_ssim - ref_ssim) <= 0.002, f"{mean_ssim:.5f} vs {ref_ssim}"


def test_y_is_bt601_rounded_like_matlab():
    rgb = torch.tensor([[0, 255, 255, 0, 10], [0, 255, 0, 255, 200], [0, 255, 0, 0, 30]],
                       dtype=torch.uint8).view(3, 1, 5)
    # 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1], rounded
    expected = [16, 235, round(16 + 65.481), round(16 + 128.553),
                math.floor(16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255 + 0.5)]
    y = rgb_to_y(rgb)
    assert y.dtype == torch.float64 and y.shape == (1, 5)
    assert y[0].tolist() == expected


def test_single_channel_is_used_as_y():
    gray = torch.randint(0, 256, (1, 8, 9), dtype=torch.uint8)
    assert torch.equal(rgb_to_y(gray), gray[0].double())


def test_y_needs_uint8():
    with pytest.raises(ValueError, match="expected a uint8 image"):
        rgb_to_y(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 4\)"):
        rgb_to_y(torch.zeros(4, 4, 4, dtype=torch.uint8))


def test_psnr_known_values():
    a = torch.zeros(10, 10, dtype=torch.float64)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))  # MSE 1: 48.13 dB
    assert psnr(a, a + 2) == pytest.approx(48.1308 - 6.0206, abs=1e-3)


def test_shave_ignores_the_border():
    hr = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    sr = hr.clone()
    sr[:, :3, :] = 0
    sr[:, :, -3:] = 255
    assert sr_psnr_ssim(sr, hr, 3) == (math.inf, pytest.approx(1.0))
    assert sr_psnr_ssim(sr, hr, 2)[0] < 30
    with pytest.raises(ValueError, match="too small to shave"):
        shave(torch.zeros(6, 40), 3)


def _ssim_reference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wang et al.'s ssim_index.m written out directly: a 2-D 11x11 window, valid conv."""
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    window = (g / g.sum())[None, None]

    def filt(t):
        return F.conv2d(t[None, None], window)[0, 0]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) *
                                                      (var_a + var_b + c2))
    return m.mean().item()


def test_ssim_matches_a_direct_2d_implementation():
    a = torch.rand(37, 52, dtype=torch.float64) * 255
    b = (a + torch.randn_like(a) * 25).clamp(0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_reference(a, b), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)
    assert 0 < ssim(a, b) < 0.99


def test_ssim_needs_11_pixels_and_equal_sizes():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(10, 30), torch.zeros(10, 30))
    with pytest.raises(ValueError, match="same size"):
        ssim(torch.zeros(20, 30), torch.zeros(20, 31))
