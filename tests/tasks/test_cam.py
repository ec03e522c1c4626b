"""Grad-CAM on the last stage, and ``resnets predict --cam``."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from resnets import create_model
from resnets.cli import app
from resnets.data.io import read_rgb
from resnets.tasks.cam import COLORMAP, colorize, crop_box, grad_cam, heatmap_rgba, write_cam_files
from resnets.weights.preprocessing import Preprocessing
from tests.serve.conftest import EXAMPLES

CIFAR = Preprocessing(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_cam_is_in_unit_range_and_follows_the_target_class():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    top = grad_cam(model, x)
    assert top.maps.shape == (2, 32, 32)
    assert top.targets == model(x).argmax(1).tolist()
    assert top.maps.min() >= 0 and torch.allclose(top.maps.flatten(1).amax(1), torch.ones(2))
    other = grad_cam(model, x, targets=[(t + 1) % 10 for t in top.targets])
    assert not torch.allclose(top.maps, other.maps)
    assert not model._forward_hooks and all(p.grad is None for p in model.parameters())


def test_cam_uses_layer4_of_imagenet_nets():
    model = create_model("resnet18", num_classes=3).eval()
    result = grad_cam(model, torch.randn(1, 3, 64, 64))
    assert result.maps.shape == (1, 64, 64)  # layer4 is 2x2 here, upsampled to the input


def test_the_heat_map_covers_the_centre_crop_the_model_saw():
    pre = Preprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert crop_box(32, 32, pre) == (0, 0, 32, 32)
    assert crop_box(64, 128, pre) == (32, 0, 96, 64)
    heat = heatmap_rgba(torch.ones(32, 32), 64, 128, pre)
    assert heat.size == (128, 64)
    assert heat.getpixel((10, 30))[3] == 0 and heat.getpixel((64, 30))[3] > 0


def test_predict_writes_one_cam_png_per_image(tmp_path):
    images = sorted(EXAMPLES.glob("*.jpg"))[:2]
    out = tmp_path / "cams"
    result = CliRunner().invoke(app, ["predict", *map(str, images), "--cam", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"{p.stem}_cam.png" for p in images]  # no temporary files left
    assert Image.open(out / written[0]).size == Image.open(images[0]).size


def test_write_cam_files_reports_unreadable_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    model = create_model("resnet20").eval()
    written, errors = write_cam_files(model, CIFAR, [bad, EXAMPLES / "cat_0007.jpg"],
                                      tmp_path / "out")
    assert [p.name for p in written] == ["cat_0007_cam.png"] and len(errors) == 1
    img = read_rgb(EXAMPLES / "cat_0007.jpg")
    assert CIFAR(img).shape == (3, 32, 32)


def test_colorize_gives_the_colormap_colours_in_a_few_bytes_per_pixel():
    """The map is coloured through a uint8 table: the colours of the float RGBA path (within
    one level), without its float64 RGBA copies of the picture (about 62 bytes a pixel)."""
    from matplotlib import colormaps

    edges = torch.arange(257) / 256  # every step of the 256-colour table, both ends
    cam = torch.cat([edges, torch.rand(20_000, generator=torch.Generator().manual_seed(0))])
    cam = cam.reshape(1, -1)
    expected = (colormaps[COLORMAP](cam.numpy())[..., :3] * 255 + 0.5).astype(np.int16)
    assert np.abs(colorize(cam).astype(np.int16) - expected).max() <= 1
    big = torch.rand(2000, 2000)  # a 4 MP picture's map
    tracemalloc.start()
    try:
        out = colorize(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (2000, 2000, 3) and out.dtype == np.uint8
    assert peak / big.numel() < 7, f"{peak / big.numel():.1f} bytes a pixel"


def test_predict_cam_reports_two_images_whose_maps_would_share_a_name(tmp_path):
    """a/cat.jpg and b/cat.jpg both map to cat_cam.png: the second is an error (exit 1), not
    a map silently left out."""
    source = sorted(EXAMPLES.glob("*.jpg"))[0]
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "cat.jpg").write_bytes(source.read_bytes())
    out = tmp_path / "cams"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--cam", str(out)])
    assert result.exit_code == 1
    assert "would overwrite" in result.stderr and "cat_cam.png" in result.stderr
    assert [p.name for p in out.iterdir()] == ["cat_cam.png"]
