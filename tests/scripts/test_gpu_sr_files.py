"""scripts/gpu_sr_files.py: the SR images packed for a GPU lease come back pixel for pixel,
and a checkpoint cut into pieces comes back whole."""

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.models.imresize import downscale, modcrop
from resnets.train.run_folder import load_training_state, save_training_state

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_sr_files.py"


@pytest.fixture(scope="module")
def files():
    spec = importlib.util.spec_from_file_location("gpu_sr_files", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _picture(rng, h, w, grey=False):
    coarse = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1) + (() if grey else (3,)),
                          dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR)


def _save_pair(root, name, img, scale):
    """HR (modcrop) and LR (bicubic) at ``scale`` as matlab_ref lays them out."""
    pixels = torch.from_numpy(np.asarray(img).copy())
    chw = pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)
    for kind, t in (("HR", modcrop(chw, scale)), ("LR", downscale(modcrop(chw, scale), scale))):
        folder = root / f"x{scale}" / kind
        folder.mkdir(parents=True, exist_ok=True)
        arr = (t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)).numpy()
        Image.fromarray(arr).save(folder / f"{name}_SRF_{scale}_{kind}.png")


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory):
    """A folder shaped like ../shared/data/sr: BMP and PNG training images, and report sets
    with an RGB and a grey picture at x2/x3/x4 (sizes that modcrop differently per scale),
    one LR image replaced by noise (not the bicubic of its HR)."""
    root = tmp_path_factory.mktemp("sr")
    rng = np.random.default_rng(0)
    (root / "T91").mkdir()
    (root / "BSD200").mkdir()
    _picture(rng, 30, 41).save(root / "T91" / "t1.bmp")
    _picture(rng, 37, 29).save(root / "BSD200" / "100075.png")
    for name, pics in (("Set5", [("img_001", False)]), ("Set14", [("img_001", False),
                                                                  ("img_002", True)])):
        for pic, grey in pics:
            img = _picture(rng, 35, 50, grey)
            for scale in (2, 3, 4):
                _save_pair(root / "matlab_ref" / name, pic, img, scale)
    odd = root / "matlab_ref/Set14/x3/LR/img_001_SRF_3_LR.png"
    Image.fromarray(rng.integers(0, 256, (11, 16, 3), dtype=np.uint8)).save(odd)
    return root


def _decoded(path):
    img = Image.open(path)
    return img.mode, img.size, img.tobytes()


def test_pack_and_unpack_give_back_every_file_pixel_for_pixel(files, sr_root, tmp_path):
    files.pack(sr_root, tmp_path / "pack", workers=1)
    with tarfile.open(tmp_path / "pack" / "sr.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        stored = [n for n in tar.getnames() if n.endswith(".webp")]
    made = sorted(rel for rel, e in manifest.items() if "downscale" in e)
    assert len(made) == 8 and "matlab_ref/Set14/x3/LR/img_001_SRF_3_LR.png" not in made
    assert len(stored) == 2 + 3 + 1  # the training images, one canvas per picture, the odd LR
    assert files.unpack(tmp_path / "pack", tmp_path / "there", workers=1)
    originals = files.image_files(sr_root)
    assert files.image_files(tmp_path / "there" / "sr") == originals
    for rel in originals:  # same names, formats, modes, sizes and pixels
        assert _decoded(tmp_path / "there" / "sr" / rel) == _decoded(sr_root / rel), rel
        assert Image.open(tmp_path / "there" / "sr" / rel).format == Image.open(
            sr_root / rel).format
    assert Image.open(tmp_path / "there/sr/matlab_ref/Set14/x2/HR/img_002_SRF_2_HR.png"
                      ).mode == "L"


def test_unpack_refuses_pixels_that_differ_from_the_digest(files, sr_root, tmp_path):
    files.pack(sr_root, tmp_path / "pack", workers=1)
    (tmp_path / "pack" / "sr.digest").write_text("0" * 64 + "\n")
    assert not files.unpack(tmp_path / "pack", tmp_path / "there", workers=1)


def test_a_checkpoint_cut_into_pieces_joins_whole_or_not_at_all(files, tmp_path):
    path = tmp_path / "last.pt"
    blob = np.random.default_rng(1).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()
    path.write_bytes(blob)
    pieces = files.split(path, 1.0)
    assert [p.name for p in pieces] == ["last.pt.00", "last.pt.01", "last.pt.02"]
    assert not path.exists() and max(p.stat().st_size for p in pieces) == 2**20
    assert files.join(pieces[0]).read_bytes() == blob
    pieces[1].write_bytes(pieces[1].read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="do not make the file they were cut from"):
        files.join(pieces[0], tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


def test_slim_drops_the_optimizer_moments_and_stays_loadable(files, tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 4)).sum().backward()
    opt.step()
    save_training_state(tmp_path / "full.pt", {"config": {}, "model": model.state_dict(),
                                               "optimizer": opt.state_dict()})
    files.slim(tmp_path / "full.pt", tmp_path / "slim.pt")
    state = load_training_state(tmp_path / "slim.pt")
    assert state["optimizer"]["state"] == {} and state["optimizer"]["param_groups"]
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(state["optimizer"])  # an optimizer takes it: it starts its averages
    assert torch.equal(state["model"]["weight"], model.weight.detach())
