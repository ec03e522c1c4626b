import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from rich.progress import TimeElapsedColumn, TimeRemainingColumn
from typer.testing import CliRunner

from resnets.cli import app
from resnets.models.imresize import to_uint8, upscale
from resnets.models.self_ensemble import SelfEnsemble
from resnets.models.sr import create_sr_model
from resnets.tasks import upscale as upscale_module
from resnets.tasks.upscale import (
    Picture,
    TileProgress,
    _tile_starts,
    describe_inference,
    inference_model,
    load_picture,
    run_sr,
    save_png,
    upscale_files,
    upscale_picture,
    upscale_tensor,
)
from resnets.weights.sr import save_sr_weights

runner = CliRunner()




def _smooth_image(h: int, w: int, chans: int = 3, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 image: upsampled noise plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, chans, h // 8 + 2, w // 8 + 2, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0]
    img = (img * 0.9 + 0.1 * torch.rand(chans, h, w, generator=g)).clamp(0, 1)
    arr = to_uint8(img).permute(1, 2, 0).numpy()
    return arr[..., 0] if chans == 1 else arr


@pytest.mark.parametrize("name", ["edsr_tiny", "vdsr_tiny"])
def test_tiled_equals_untiled(name):
    model = create_sr_model(name, scales=(2, 3)).eval()
    x = torch.rand(3, 50, 70)
    calls = []
    whole = upscale_tensor(model, x, 3, tile=None)
    tiled = upscale_tensor(model, x, 3, tile=32, overlap=8, pad=16,
                           on_tile=lambda done, total: calls.append(total))
    assert calls[-1] >= 4 and len(calls) == calls[-1]  # 2 x 3 = 6 tiles
    assert (tiled - whole).abs().max() <= 1 / 255
    # the same tiles without context or blending show seams: the check can fail
    naive = upscale_tensor(model, x, 3, tile=32, overlap=0, pad=0)
    assert (naive - whole).abs().max() > 1 / 255


def test_tiles_cover_the_image_and_overlap():
    for length, tile, overlap in [(100, 32, 8), (33, 32, 8), (32, 32, 8), (250, 64, 16)]:
        starts = _tile_starts(length, tile, overlap)
        covered = torch.zeros(length, dtype=torch.bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="tile .* must be larger than overlap"):
        upscale_tensor(create_sr_model("bicubic"), torch.rand(3, 40, 40), 2, tile=8, overlap=8)


def test_rgb_model_on_grayscale_and_gray_model_on_rgb():
    rgb_model = create_sr_model("edsr_tiny").eval()
    gray = torch.rand(1, 12, 10)
    out = run_sr(rgb_model, gray, 2)
    with torch.no_grad():
        expected = rgb_model(gray.expand(3, -1, -1)[None], 2)[0].mean(0, keepdim=True)
    assert out.shape == (1, 24, 20) and torch.allclose(out, expected, atol=1e-6)
    gray_model = create_sr_model("vdsr_tiny", in_chans=1).eval()
    rgb = torch.rand(3, 12, 10)
    out = run_sr(gray_model, rgb, 2)
    with torch.no_grad():
        assert torch.allclose(out[1], gray_model(rgb[1][None, None], 2)[0, 0], atol=1e-6)


def test_grayscale_file_stays_grayscale(tmp_path):
    Image.fromarray(_smooth_image(20, 30, 1)).save(tmp_path / "g.png")
    [r] = upscale_files(create_sr_model("bicubic"), [tmp_path / "g.png"], 3, progress=False)
    assert r.error is None and r.output == tmp_path / "g_x3.png"
    out = Image.open(r.output)
    assert out.mode == "L" and out.size == (90, 60)


def test_rgba_keeps_an_alpha_upscaled_bicubic(tmp_path):
    arr = _smooth_image(16, 24, 4)
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    [r] = upscale_files(create_sr_model("edsr_tiny").eval(), [tmp_path / "a.png"], 2,
                        tmp_path / "out", progress=False)
    out = Image.open(r.output)
    assert out.mode == "RGBA" and out.size == (48, 32)
    alpha = torch.from_numpy(arr[..., 3].astype(np.float32) / 255)[None]
    expected = to_uint8(upscale(alpha, 2).clamp(0, 1))[0].numpy()
    assert np.array_equal(np.asarray(out)[..., 3], expected)


def test_16_bit_grayscale_is_written_as_16_bit(tmp_path):
    arr = (_smooth_image(20, 20, 1).astype(np.uint16) * 257 + 100).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    pic = load_picture(tmp_path / "d.png")
    assert pic.bits == 16 and pic.color.shape == (1, 20, 20)
    [r] = upscale_files(create_sr_model("bicubic"), [tmp_path / "d.png"], 2, progress=False)
    out = np.asarray(Image.open(r.output))
    assert Image.open(r.output).mode == "I;16" and out.shape == (40, 40)
    ref = upscale(torch.from_numpy(arr.astype(np.float64) / 65535)[None], 2).clamp(0, 1)
    ref = np.floor(ref[0].numpy() * 65535 + 0.5)
    assert np.abs(out.astype(np.float64) - ref).max() <= 1  # float32 path, 16-bit levels
    assert len(np.unique(out % 257)) > 1  # not 8-bit values scaled up


def test_colour_profile_is_kept(tmp_path):
    from PIL import ImageCms

    # pixels in a wide-gamut space (a phone's Display P3, a camera's Adobe RGB) only look
    # right with their profile: an output without it is shown as sRGB, colours washed out
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "p3.jpg", icc_profile=icc)
    Image.fromarray(_smooth_image(16, 16, 1)).save(tmp_path / "g.png", icc_profile=icc)
    cmyk_icc = icc[:16] + b"CMYK" + icc[20:]  # the header's data colour space
    Image.fromarray(_smooth_image(16, 16, 4)).convert("CMYK").save(tmp_path / "c.jpg",
                                                                    icc_profile=cmyk_icc)
    rgb, gray, cmyk = upscale_files(create_sr_model("bicubic"), [
        tmp_path / "p3.jpg", tmp_path / "g.png", tmp_path / "c.jpg"], 2, progress=False)
    assert Image.open(rgb.output).info.get("icc_profile") == icc
    # an RGB profile does not describe a grayscale or a converted CMYK output: left out
    assert Image.open(gray.output).mode == "L"
    assert "icc_profile" not in Image.open(gray.output).info
    assert "icc_profile" not in Image.open(cmyk.output).info


def test_corrupt_input_is_reported_and_others_are_written(tmp_path):
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(_smooth_image(16, 16, seed=1)).save(tmp_path / "c.jpg")
    results = upscale_files(create_sr_model("bicubic"),
                            [tmp_path / n for n in ("a.png", "b.png", "c.jpg", "d.png")], 2,
                            tmp_path / "out", progress=False)
    assert [r.error is None for r in results] == [True, False, True, False]
    assert results[1].error.startswith(f"{tmp_path / 'b.png'}: ")
    assert "\n" not in results[1].error
    assert results[3].error == f"{tmp_path / 'd.png'}: no such file"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png", "c_x2.png"]


def test_a_run_that_writes_nothing_makes_no_output_folder(tmp_path):
    """A failed run left an empty output folder behind (made before any input was read)."""
    bicubic = create_sr_model("bicubic")
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.png")
    results = upscale_files(bicubic, [tmp_path / "missing.png"], 2, tmp_path / "out1",
                            progress=False)
    assert results[0].error and not (tmp_path / "out1").exists()
    with pytest.raises(ValueError, match=r"tile \(8\) must be larger than overlap \(16\)"):
        upscale_files(bicubic, [tmp_path / "a.png"], 2, tmp_path / "out2", tile=8)
    assert not (tmp_path / "out2").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        upscale_files(bicubic, [tmp_path / "a.png"], 2, tmp_path / "file" / "out3")
    upscale_files(bicubic, [tmp_path / "a.png"], 2, tmp_path / "new" / "out4", progress=False)
    assert (tmp_path / "new" / "out4" / "a_x2.png").is_file()


def test_two_inputs_never_share_an_output(tmp_path):
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.jpg")
    first, second = upscale_files(create_sr_model("bicubic"),
                                  [tmp_path / "a.png", tmp_path / "a.jpg"], 2, progress=False)
    assert first.error is None and first.output == tmp_path / "a_x2.png"
    assert second.output is None and "would overwrite" in second.error


def test_two_inputs_never_share_an_output_however_their_paths_are_spelled(tmp_path,
                                                                          monkeypatch):
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(_smooth_image(16, 16, seed=1)).save(tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)  # one input relative, the other absolute: the same folder
    first, second = upscale_files(create_sr_model("bicubic"), ["a.png", tmp_path / "a.jpg"],
                                  2, progress=False)
    assert first.error is None and first.output.resolve() == tmp_path / "a_x2.png"
    assert second.output is None and "would overwrite" in second.error
    expected = to_uint8(upscale(load_picture(tmp_path / "a.png").color, 2).clamp(0, 1))
    got = torch.from_numpy(np.array(Image.open(first.output))).permute(2, 0, 1)
    assert torch.equal(got, expected)  # the first result is still there



def test_a_result_never_overwrites_an_input_of_the_run(tmp_path):
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "a.png")
    Image.fromarray(_smooth_image(16, 16, seed=1)).save(tmp_path / "a_x2.png")
    before = (tmp_path / "a_x2.png").read_bytes()
    first, second = upscale_files(create_sr_model("bicubic"),
                                  [tmp_path / "a.png", tmp_path / "a_x2.png"], 2, progress=False)
    assert first.output is None and "an input of this run" in first.error
    assert (tmp_path / "a_x2.png").read_bytes() == before  # the input is intact
    assert second.error is None and second.output == tmp_path / "a_x2_x2.png"


def test_png_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"previous result")
    pic = Picture(torch.from_numpy(_smooth_image(8, 8)).permute(2, 0, 1).float() / 255)

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_png(pic, target)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # temporary file removed
    monkeypatch.undo()
    save_png(pic, target)
    assert Image.open(target).size == (8, 8)


def _terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def test_progress_bar_follows_large_images_on_a_terminal(tmp_path, monkeypatch):
    import rich.progress

    updates = []
    original = rich.progress.Progress.update

    def spy(self, task_id, **kwargs):
        updates.append(kwargs.get("completed"))
        return original(self, task_id, **kwargs)

    monkeypatch.setattr(rich.progress.Progress, "update", spy)
    Image.fromarray(_smooth_image(60, 60)).save(tmp_path / "big.png")
    Image.fromarray(_smooth_image(10, 10)).save(tmp_path / "small.png")
    model = create_sr_model("bicubic")
    upscale_files(model, [tmp_path / "big.png"], 2, tile=32, overlap=4)
    assert updates == []  # stderr is not a terminal under pytest: no bar
    monkeypatch.setattr(upscale_module, "progress_console", _terminal)
    upscale_files(model, [tmp_path / "small.png"], 2, tile=32, overlap=4)
    assert updates == []  # one tile: no bar
    upscale_files(model, [tmp_path / "big.png"], 2, tile=32, overlap=4, progress=False)
    assert updates == []  # asked to be quiet
    upscale_files(model, [tmp_path / "big.png"], 2, tile=32, overlap=4)
    assert updates == [1, 2, 3, 4]


def test_tile_callback_drives_a_bar_with_elapsed_and_remaining_time():
    console = _terminal()
    pic = Picture(torch.rand(3, 50, 70))
    with TileProgress("photo.png", console=console) as on_tile:
        upscale_picture(create_sr_model("bicubic"), pic, 2, tile=32, overlap=8,
                        on_tile=on_tile)
        bar = on_tile.__self__.progress
        [task] = bar.tasks
        assert task.total == 6 and task.completed == 6  # 2 x 3 tiles, every one counted
        assert task.description == "upscaling photo.png"
    columns = [type(c) for c in bar.columns]
    assert TimeElapsedColumn in columns and TimeRemainingColumn in columns
    assert "upscaling photo.png" in console.file.getvalue()
    assert not TileProgress("x", console=Console(file=io.StringIO())).enabled  # no terminal


def test_elapsed_and_time_left_count_every_tile_even_slow_ones():
    # tiles of 40 s (a large network on the CPU): longer than rich's default 30 s speed
    # window, which would leave a single sample and no estimate at all
    now = [0.0]
    console = Console(file=io.StringIO(), force_terminal=True, width=100,
                      get_time=lambda: now[0])
    with TileProgress("slow.png", console=console) as on_tile:
        for done in (1, 2, 3):
            now[0] += 40
            on_tile(done, 5)
            [task] = on_tile.__self__.progress.tasks
            assert task.elapsed == pytest.approx(40 * done)  # the first tile counts too
            if done > 1:
                assert task.time_remaining == pytest.approx(40 * (5 - done))


@pytest.mark.parametrize("kind", ["torch", "bf16", "onnxruntime", "openvino"])
def test_tiled_upscale_through_each_backend(kind):
    for module in {"onnxruntime": ("onnx", "onnxruntime", "onnxscript"),
                   "openvino": ("openvino",)}.get(kind, ()):
        pytest.importorskip(module, reason=f"the {kind} backend needs {module}")
    model = create_sr_model("edsr_tiny", scales=(2, 3)).eval()
    x = torch.rand(3, 50, 70)
    run = inference_model(model, kind, threads=1, scales=(3,))
    assert describe_inference(run) == {"backend": kind, "inference": "single pass"}
    whole = upscale_tensor(model, x, 3, tile=None)
    tiled = upscale_tensor(run, x, 3, tile=32, overlap=8, pad=16)
    gray = upscale_tensor(run, x[:1], 3, tile=32, overlap=8, pad=16)  # 1 channel, RGB model
    assert tiled.shape == whole.shape and gray.shape == (1, 150, 210)
    assert (tiled - whole).abs().max() <= (4 if kind == "bf16" else 1) / 255


def test_self_ensemble_runs_through_tiles_and_says_so():
    model = create_sr_model("edsr_tiny", scales=(2,)).eval()
    run = inference_model(model, "torch", self_ensemble=True)
    assert isinstance(run, SelfEnsemble)
    assert describe_inference(run) == {"backend": "torch", "inference": "self-ensemble x8"}
    x = torch.rand(3, 40, 40)
    whole = upscale_tensor(run, x, 2, tile=None)
    tiled = upscale_tensor(run, x, 2, tile=24, overlap=8, pad=16)
    assert (tiled - whole).abs().max() <= 1 / 255
    assert (whole - upscale_tensor(model, x, 2, tile=None)).abs().max() > 1e-3


def test_cli_upscale_writes_and_reports(tmp_path):
    Image.fromarray(_smooth_image(40, 50)).save(tmp_path / "photo.png")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    weights = tmp_path / "w.safetensors"
    save_sr_weights(create_sr_model("edsr_tiny", scales=(2, 3)), weights)
    result = runner.invoke(app, ["upscale", str(tmp_path / "photo.png"), str(tmp_path /
                           "broken.jpg"), "-o", str(tmp_path / "out"), "--scale", "3",
                           "--weights", str(weights), "--tile", "24", "--quiet"])
    assert result.exit_code == 1
    assert "photo_x3.png (150x120)" in result.stdout
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'broken.jpg'}: ")
    assert Image.open(tmp_path / "out" / "photo_x3.png").size == (150, 120)


def test_cli_upscale_without_weights_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr("resnets.weights.sr.BUNDLED_SR_DIR", tmp_path / "none")
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "p.png")
    result = runner.invoke(app, ["upscale", str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "no bundled super-resolution weights yet" in result.output
    ok = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), "--model", "bicubic"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "p_x2.png").exists()
    wrong = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), "--model", "bicubic",
                                "--scale", "5"])
    assert wrong.exit_code != 0


def test_cli_upscale_refuses_a_scale_the_weights_lack(tmp_path):
    Image.fromarray(_smooth_image(16, 16)).save(tmp_path / "p.png")
    weights = tmp_path / "w.safetensors"
    save_sr_weights(create_sr_model("edsr_tiny"), weights)  # x2 only
    result = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), "--weights", str(weights),
                                 "--scale", "4"])
    assert result.exit_code == 1
    assert "error: this model serves scales [2], got scale 4" in result.output


def test_cli_upscale_json_names_backend_and_self_ensemble(tmp_path):
    Image.fromarray(_smooth_image(20, 24)).save(tmp_path / "p.png")
    weights = tmp_path / "w.safetensors"
    save_sr_weights(create_sr_model("edsr_tiny"), weights)
    result = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), "--weights", str(weights),
                                 "--backend", "torch", "--self-ensemble", "--json"])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert record["backend"] == "torch" and record["inference"] == "self-ensemble x8"
    assert record["out_size"] == [48, 40] and record["model"] == "w"
    bad = runner.invoke(app, ["upscale", str(tmp_path / "p.png"), "--weights", str(weights),
                              "--backend", "int8"])
    assert bad.exit_code == 1 and "unknown super-resolution backend 'int8'" in bad.output


@pytest.mark.parametrize("channels, key, mode", [(1, 0, "LA"), (3, (0, 0, 0), "RGBA")])
def test_a_png_colour_key_becomes_an_alpha(tmp_path, channels, key, mode):
    """A PNG's tRNS chunk on a gray or RGB image makes pixels of one value transparent: the
    result keeps that transparency as an alpha (upscaled bicubic, as RGBA's)."""
    arr = _smooth_image(16, 24, channels)
    arr[4:10, 6:14] = 0  # a clear window, in the key's colour
    clear = (arr == 0) if channels == 1 else (arr == 0).all(-1)
    Image.fromarray(arr).save(tmp_path / "k.png", transparency=key)
    pic = load_picture(tmp_path / "k.png")
    assert pic.alpha is not None and pic.color.shape[0] == channels
    assert torch.equal(pic.alpha[0] == 0, torch.from_numpy(clear))
    [r] = upscale_files(create_sr_model("bicubic"), [tmp_path / "k.png"], 2, tmp_path / "out",
                        progress=False)
    out = Image.open(r.output)
    assert out.mode == mode and out.size == (48, 32)
    alpha = torch.from_numpy((~clear).astype(np.float32))[None]
    expected = to_uint8(upscale(alpha, 2).clamp(0, 1))[0].numpy()
    assert np.array_equal(np.asarray(out)[..., -1], expected)


def test_a_16_bit_gray_colour_key_becomes_an_alpha(tmp_path):
    arr = (_smooth_image(20, 20, 1).astype(np.uint16) * 257 + 100).astype(np.uint16)
    arr[2:6, 2:6] = 7
    Image.fromarray(arr).save(tmp_path / "d.png", transparency=7)
    pic = load_picture(tmp_path / "d.png")
    assert pic.bits == 16 and pic.alpha is not None
    assert torch.equal(pic.alpha[0] == 0, torch.from_numpy(arr == 7))
