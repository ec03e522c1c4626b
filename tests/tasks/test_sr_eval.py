import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from resnets.cli import app
from resnets.models.sr import create_sr_model
from resnets.tasks.sr_eval import PUBLISHED, benchmark_name, evaluate_sr, load_pairs
from resnets.weights.sr import get_sr_model, save_sr_weights
from tests.conftest import one_image_sr_ref, shared_path

runner = CliRunner()




def _hr_folder(root, n=3, size=(36, 45)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.uniform(0, 255, (size[0] // 6, size[1] // 6, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR)
        img.save(root / f"{i}.png")
    return root


def test_cli_json_bicubic_on_matlab_ref_set5():
    data = shared_path("sr", "matlab_ref", "Set5")
    result = runner.invoke(app, ["sr-eval", "--data", str(data), "--scale", "2", "--model",
                                 "bicubic", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert len(record["images"]) == 5 and record["benchmark"] == "Set5"
    assert {"name", "psnr", "ssim"} <= set(record["images"][0])
    assert record["mean"] == record["bicubic"]
    assert abs(record["mean"]["psnr"] - 33.66) <= 0.02  # published bicubic, Set5 x2
    assert abs(record["mean"]["ssim"] - 0.9299) <= 0.002
    assert record["published"]["VDSR"] == {"psnr": 37.53, "ssim": 0.9587}


def test_hr_only_folder_gives_the_same_scores_as_the_matlab_files():
    # Set5's originals, mod-cropped and downscaled here, equal matlab_ref's LR files.
    bicubic = create_sr_model("bicubic")
    ours = evaluate_sr(bicubic, shared_path("sr", "Set5"), 3, "bicubic")
    ref = evaluate_sr(bicubic, shared_path("sr", "matlab_ref", "Set5", "x3"), 3, "bicubic")
    assert [i.psnr for i in ours.images] == [i.psnr for i in ref.images]
    assert ours.benchmark == ref.benchmark == "Set5"


def test_grayscale_images_are_their_own_y():
    pairs = load_pairs(shared_path("sr", "matlab_ref", "Set14", "x4"), 4)
    gray = [name for name, hr, lr in pairs if hr.shape[0] == 1]
    assert gray == ["img_003_SRF_4_HR.png"]  # bridge.png


def test_table_shows_images_mean_and_published_rows():
    data = shared_path("sr", "matlab_ref", "Set5")
    result = runner.invoke(app, ["sr-eval", "--data", str(data), "--scale", "4", "--model",
                                 "bicubic"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for text in ("img_001_SRF_4_HR.png", "mean", "28.42", "SRCNN", "30.48", "VDSR", "31.35",
                 "bicubic (this run)"):
        assert text in result.output


def test_model_with_weights_on_a_folder_of_hr_images(tmp_path):
    _hr_folder(tmp_path / "photos")
    weights = tmp_path / "w.safetensors"
    save_sr_weights(create_sr_model("edsr_tiny", scales=(2, 3)), weights)
    result = runner.invoke(app, ["sr-eval", "--data", str(tmp_path / "photos"), "--scale", "3",
                                 "--weights", str(weights), "--backend", "torch", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["model"] == "w" and record["published"] is None
    assert len(record["images"]) == 3
    assert record["mean"]["psnr"] != record["bicubic"]["psnr"]  # an untrained net differs
    assert all(np.isfinite(i["psnr"]) for i in record["images"])


def test_hr_lr_folder_checks_counts_and_sizes(tmp_path):
    root = tmp_path / "pairs"
    _hr_folder(root / "HR", n=2, size=(24, 30))
    _hr_folder(root / "LR", n=1, size=(12, 15))
    with pytest.raises(ValueError, match="as many images in .*HR as in .*LR .* found 2 and 1"):
        load_pairs(root, 2)
    _hr_folder(root / "LR", n=2, size=(10, 15))
    with pytest.raises(ValueError, match="0.png is 3x10x15, expected 3x12x15 for 0.png at x2"):
        load_pairs(root, 2)


def test_hr_and_lr_pair_by_name_whatever_the_lr_suffix(tmp_path):
    import torch

    from resnets.models.imresize import downscale

    # photo1 < photo10 < photo2, but photo10x2 < photo1x2: sorting the two folders apart
    # would pair photo1's HR with photo10's LR, silently when the images are the same size
    root = tmp_path / "pairs"
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    rng = np.random.default_rng(0)
    for name in ("photo1", "photo10", "photo2"):
        hr = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(hr).save(root / "HR" / f"{name}.png")
        lr = downscale(torch.from_numpy(hr).permute(2, 0, 1), 2).permute(1, 2, 0).numpy()
        Image.fromarray(lr).save(root / "LR" / f"{name}x2.png")
    pairs = load_pairs(root, 2)
    assert [name for name, _, _ in pairs] == ["photo1.png", "photo10.png", "photo2.png"]
    for _, hr, lr in pairs:
        assert torch.equal(lr, downscale(hr, 2))


def _pair_folder(root, hr_names, lr_names, size=(24, 24), lr_scale=2):
    """HR images of random pixels and their MATLAB-style downscales at ``lr_scale``, the
    i-th LR file named ``lr_names[i]`` for the i-th HR file; returns the HR images."""
    import torch

    from resnets.models.imresize import downscale, modcrop

    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    rng = np.random.default_rng(len(hr_names))
    images = {}
    for hr_name, lr_name in zip(hr_names, lr_names, strict=True):
        hr = torch.from_numpy(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).permute(2, 0, 1)
        Image.fromarray(hr.permute(1, 2, 0).numpy()).save(root / "HR" / hr_name)
        lr = downscale(modcrop(hr, lr_scale), lr_scale)
        Image.fromarray(lr.permute(1, 2, 0).numpy()).save(root / "LR" / lr_name)
        images[hr_name] = hr
    return images


def test_hr_and_lr_pair_by_name_not_by_sorted_position(tmp_path):
    import torch

    from resnets.models.imresize import downscale

    # sorted apart, HR is a, a1, img_.. and LR is a1, a_LR, img_..: by position a's HR would
    # meet a1's LR. The token is matched whatever its case; 25x31 pairs once mod-cropped.
    root = tmp_path / "pairs"
    _pair_folder(root, ["a.png", "a1.png", "img_001_SRF_2_HR.png"],
                 ["a_LR.png", "a1.png", "img_001_SRF_2_lr.png"], size=(25, 31))
    pairs = load_pairs(root, 2)
    assert [name for name, _, _ in pairs] == ["a.png", "a1.png", "img_001_SRF_2_HR.png"]
    for _, hr, lr in pairs:
        assert hr.shape[-2:] == (24, 30)
        assert torch.equal(lr, downscale(hr, 2))


def test_matlab_names_pair_by_number_and_an_unpaired_file_is_an_error(tmp_path):
    root = tmp_path / "x2"
    _pair_folder(root, ["img_002_SRF_2_HR.png", "img_001_SRF_2_HR.png"],
                 ["img_002_SRF_2_LR.png", "img_001_SRF_2_LR.png"])
    assert [name for name, _, _ in load_pairs(root, 2)] == ["img_001_SRF_2_HR.png",
                                                            "img_002_SRF_2_HR.png"]
    (root / "LR" / "img_002_SRF_2_LR.png").rename(root / "LR" / "img_003_SRF_2_LR.png")
    with pytest.raises(ValueError, match=r"LR.img_003_SRF_2_LR.png has no HR image of the "
                                         r"same name; HR.img_002_SRF_2_HR.png has no LR image"):
        load_pairs(root, 2, errors=[])


def test_a_single_pair_of_different_names_is_an_error(tmp_path):
    _pair_folder(tmp_path, ["c.png"], ["b.png"])
    with pytest.raises(ValueError, match=r"LR.b.png has no HR image of the same name; "
                                         r"HR.c.png has no LR image of the same name"):
        load_pairs(tmp_path, 2)


def test_cli_names_the_unpaired_files_in_one_line(tmp_path):
    # HR x, y; LR y and zz_other (x's LR): by sorted position x would meet y's LR
    _pair_folder(tmp_path, ["y.png", "x.png"], ["y.png", "zz_other.png"])
    result = runner.invoke(app, ["sr-eval", "--data", str(tmp_path), "--model", "bicubic",
                                 "--json"])
    assert result.exit_code == 1
    [line] = [ln for ln in result.output.splitlines() if ln.strip()]
    assert line.startswith("error: ") and "Traceback" not in result.output
    assert "LR/zz_other.png has no HR image of the same name" in line
    assert "HR/x.png has no LR image of the same name" in line


def test_lr_images_of_another_scale_say_so(tmp_path):
    _pair_folder(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "c.png"])
    errors = []
    with pytest.raises(ValueError, match=r"none of the 3 image pairs in .* could be scored: "
                                         r"their LR sizes do not match x3 \(made at x2\)"):
        load_pairs(tmp_path, 3, errors)
    assert len(errors) == 3 and "a.png is 3x12x12, expected 3x8x8 for a.png at x3" in errors[0]
    result = runner.invoke(app, ["sr-eval", "--data", str(tmp_path), "--scale", "3",
                                 "--model", "bicubic"])
    assert result.exit_code == 1
    assert "no readable images" not in result.output
    assert result.output.splitlines()[-1].startswith("error: none of the 3 image pairs in ")


def test_a_lone_image_too_small_to_score_says_why_not_that_it_is_unreadable(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "s.png")
    result = runner.invoke(app, ["sr-eval", "--data", str(tmp_path), "--scale", "4",
                                 "--model", "bicubic"])
    assert result.exit_code == 1
    [line] = [ln for ln in result.output.splitlines() if ln.strip()]
    assert line.startswith(f"error: the only image in {tmp_path} could not be scored: ")
    assert "s.png: image of 16x16 pixels is too small to score at x4" in line


def test_one_lr_image_of_the_wrong_size_is_listed_the_others_scored(tmp_path):
    _pair_folder(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    Image.new("RGB", (10, 12)).save(tmp_path / "LR" / "b.png")
    errors = []
    assert [name for name, _, _ in load_pairs(tmp_path, 2, errors)] == ["a.png"]
    [error] = errors
    assert error.endswith("b.png is 3x12x10, expected 3x12x12 for b.png at x2")



def test_an_image_too_small_to_score_is_listed_not_fatal(tmp_path):
    # 16x16 at x4: 8x8 once 4 pixels are shaved, below SSIM's 11x11 window
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "s.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    result = evaluate_sr(create_sr_model("bicubic"), tmp_path, 4)
    assert [s.name for s in result.images] == ["b.png"]
    [error] = result.errors
    assert "s.png" in error and "too small to score at x4" in error


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("resnets.weights.sr.BUNDLED_SR_DIR", tmp_path / "none")
    cases = [
        (["sr-eval", "--data", str(tmp_path)], "no bundled super-resolution weights yet"),
        (["sr-eval", "--data", str(tmp_path / "missing"), "--model", "bicubic"],
         "does not exist"),
        (["sr-eval", "--data", str(tmp_path), "--model", "bicubic"], "no images in"),
        (["sr-eval", "--data", str(tmp_path), "--model", "vdsr"],
         "a model name with a weights file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_benchmark_names_and_published_table():
    assert benchmark_name("/x/matlab_ref/Set14/x2") == "Set14"
    assert benchmark_name("/x/sr/set5") == "Set5"
    assert benchmark_name("/x/photos") is None
    assert PUBLISHED[("Set14", 4)]["Bicubic"] == (26.00, .7027)
    assert len(PUBLISHED) == 6


def test_self_ensemble_is_labelled_and_beats_the_single_pass_on_set5():
    model, label = get_sr_model("edsr_small_x234")
    data = shared_path("sr", "matlab_ref", "Set5", "x4")
    single = evaluate_sr(model, data, 4, label)
    ensemble = evaluate_sr(model, data, 4, label, self_ensemble=True)
    assert single.inference == "single pass" and single.model == label
    assert ensemble.inference == "self-ensemble x8"
    assert ensemble.model == f"{label}, self-ensemble x8"
    record = ensemble.to_dict()
    assert record["inference"] == "self-ensemble x8" and "self-ensemble x8" in record["model"]
    gain = ensemble.mean()[0] - single.mean()[0]
    assert 0.01 < gain < 0.5  # EDSR+ gains about 0.1 dB (Lim et al. 2017, Table 3)
    assert ensemble.bicubic_mean() == single.bicubic_mean()  # the baseline is not ensembled


def test_cli_names_the_backend_and_the_inference(tmp_path):
    data = one_image_sr_ref(tmp_path, scales=(4,)) / "Set5" / "x4"
    result = runner.invoke(app, ["sr-eval", "--data", str(data), "--scale", "4", "--model",
                                 "edsr_small_x234", "--backend", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["backend"] == "bf16" and record["inference"] == "single pass"
    assert record["model"] == "edsr_small_x234 (bundled)"
    table = runner.invoke(app, ["sr-eval", "--data", str(data), "--scale", "4", "--model",
                                "edsr_small_x234", "--backend", "torch", "--self-ensemble"],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "(torch, self-ensemble x8)" in table.output
    assert "edsr_small_x234 (bundled), self-ensemble x8 (this run)" in table.output


def test_the_model_help_names_the_default_that_is_bundled():
    """SR_MODEL_HELP names the default upscaler in words: bundling a better network changes
    the default, and this fails until the help says so."""
    from resnets.cli import SR_MODEL_HELP
    from resnets.weights.sr import bundled_sr_files, bundled_sr_weights

    best = bundled_sr_weights()
    assert best is not None and f"({best.stem})" in SR_MODEL_HELP
    for other in bundled_sr_files()[1:]:
        assert other.stem in SR_MODEL_HELP  # every alternative is named too
