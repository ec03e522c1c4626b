import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import resnets
from resnets.models.imresize import upscale
from resnets.models.sr import (
    EDSR,
    VDSR,
    ResBlock,
    create_sr_model,
    list_sr_models,
)
from resnets.weights.sr import get_sr_model, load_sr_weights, save_sr_weights


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,count", [
    ("edsr_baseline", {}, 1_369_859),            # EDSR-baseline x2 (Lim et al. 2017)
    ("edsr_baseline", {"scales": (4,)}, 1_517_571),  # "1.5M", Lim et al. 2017 Table 1
    ("vdsr", {"in_chans": 1}, 665_921),          # "665K" quoted for VDSR (Y channel)
    ("edsr_small", {}, 161_580),                 # issue 5's "162k" calibration network
])
def test_parameter_counts(name, kwargs, count):
    assert _params(create_sr_model(name, **kwargs)) == count


@pytest.mark.parametrize("name", ["vdsr_tiny", "edsr_tiny"])
@pytest.mark.parametrize("chans", [1, 3])
def test_any_size_one_or_three_channels_every_scale(name, chans):
    model = create_sr_model(name, in_chans=chans, scales=(2, 3, 4)).eval()
    x = torch.rand(2, chans, 13, 18)
    for scale in (2, 3, 4):
        assert model(x, scale).shape == (2, chans, 13 * scale, 18 * scale)


def _zero_last_conv(model: nn.Module) -> None:
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


@pytest.mark.parametrize("name", ["vdsr_tiny", "edsr_tiny", "edsr_baseline"])
def test_output_is_bicubic_plus_learned_residual(name):
    model = create_sr_model(name, scales=(3,)).eval()
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert not torch.allclose(model(x, 3), upscale(x, 3), atol=1e-3)
        _zero_last_conv(model)
        assert torch.allclose(model(x, 3), upscale(x, 3), atol=1e-6)


def test_edsr_blocks_have_no_batch_norm_and_scale_their_residual():
    model = create_sr_model("edsr_baseline", res_scale=0.1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 16 and all(b.res_scale == 0.1 for b in blocks)
    block = ResBlock(8, res_scale=0.0)
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(block(x), x)
    block.res_scale = 0.5
    residual = block.conv2(torch.relu(block.conv1(x)))
    assert torch.allclose(block(x), x + 0.5 * residual)


def test_multi_scale_edsr_has_one_upsampler_per_scale_and_shares_the_body():
    model = create_sr_model("edsr_tiny", scales=(2, 3, 4))
    assert isinstance(model, EDSR) and sorted(model.tail) == ["x2", "x3", "x4"]
    with pytest.raises(ValueError, match=r"serves scales \[2, 3, 4\]: pass scale="):
        model(torch.rand(1, 3, 8, 8))
    single = create_sr_model("edsr_tiny")
    assert single(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)  # its only scale
    with pytest.raises(ValueError, match=r"serves scales \[2\], got scale 3"):
        single(torch.rand(1, 3, 8, 8), 3)


def test_conv_upsampler_builds_x4_as_two_x2_steps():
    tail = create_sr_model("edsr_baseline", scales=(4,)).tail["x4"]
    shuffles = [m.upscale_factor for m in tail if isinstance(m, nn.PixelShuffle)]
    assert shuffles == [2, 2]
    with pytest.raises(ValueError, match="scales 2, 3 and powers of 2, got 5"):
        create_sr_model("edsr_baseline", scales=(5,))


def test_wrong_channels_is_an_error():
    with pytest.raises(ValueError, match=r"expected a \(N, 3, H, W\) batch"):
        create_sr_model("vdsr_tiny")(torch.rand(1, 1, 8, 8), 2)


def test_names_and_options():
    assert {"bicubic", "vdsr", "edsr_tiny", "edsr_baseline"} <= set(list_sr_models())
    with pytest.raises(ValueError, match="did you mean edsr_baseline"):
        create_sr_model("edsr_base")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\] for edsr"):
        create_sr_model("edsr_tiny", depth=3)
    assert isinstance(create_sr_model("vdsr", depth=5), VDSR)


def test_classification_registry_is_untouched():
    names = set(resnets.list_models())
    assert not names & set(list_sr_models())
    assert "resnet20" in names and "resnet50" in names


def test_trains_end_to_end():
    model = create_sr_model("edsr_tiny")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    hr = torch.rand(4, 3, 16, 16)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    losses = []
    for _ in range(5):
        loss = (model(lr, 2) - hr).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_weights_round_trip_with_metadata(tmp_path):
    model = create_sr_model("edsr_tiny", scales=(2, 4)).eval()
    path = tmp_path / "w.safetensors"
    save_sr_weights(model, path, {"note": "test"})
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left
    loaded = load_sr_weights(path)
    x = torch.rand(1, 3, 9, 7)
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x, 4), model(x, 4))


def test_weights_without_metadata_need_a_name_and_lose_prefixes(tmp_path):
    model = create_sr_model("edsr_tiny", scales=(3,))
    path = tmp_path / "plain.safetensors"
    save_file({f"module.{k}": v for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="no .resnets.sr. metadata .* give the model name"):
        load_sr_weights(path)
    loaded = load_sr_weights(path, "edsr_tiny")
    assert loaded.scales == (3,)  # read from the upsampler keys
    assert torch.equal(loaded.head.weight, model.head.weight)
    with pytest.raises(ValueError, match="do not fit EDSR: missing .* keys"):
        load_sr_weights(path, "edsr_small")


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_sr_weights(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read .*bad.safetensors: truncated, damaged"):
        load_sr_weights(bad)
    path = tmp_path / "v.safetensors"
    save_sr_weights(create_sr_model("vdsr_tiny"), path)
    with pytest.raises(ValueError, match="holds a vdsr network, not 'edsr_tiny'"):
        load_sr_weights(path, "edsr_tiny")
    meta = json.dumps({"arch": "srgan", "config": {}})
    save_file({"w": torch.zeros(1)}, str(tmp_path / "o.safetensors"), {"resnets.sr": meta})
    with pytest.raises(ValueError, match="unknown architecture 'srgan'"):
        load_sr_weights(tmp_path / "o.safetensors")


def test_get_sr_model_without_bundled_weights(tmp_path, monkeypatch):
    monkeypatch.setattr("resnets.weights.sr.BUNDLED_SR_DIR", tmp_path)
    with pytest.raises(ValueError, match="no bundled super-resolution weights yet"):
        get_sr_model()
    with pytest.raises(ValueError, match="no bundled super-resolution weights for "
                                         "'edsr_baseline' yet"):
        get_sr_model("edsr_baseline")
    with pytest.raises(ValueError, match="unknown super-resolution model 'edsr'"):
        get_sr_model("edsr")
    model, label = get_sr_model("bicubic")
    assert label == "bicubic" and _params(model) == 0
