
import pytest
import torch
import torchvision

import resnets
from resnets.models.stats import model_stats
from tests.synthetic import fresh_python

# torchvision's parameter counts (its weight docs) and He et al. 2016 Table 1.
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "plain18": 11_515_688, "plain34": 21_623_848,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272, "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
# GMACs at 224x224 measured with torchvision's models (issue #2); the paper's placement gives
# Table 1's FLOPs 1.8 / 3.6 / 3.8 / 7.6 / 11.3 x 10^9.
GMACS_V15 = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089, "resnet101": 7.801,
             "resnet152": 11.514}
GMACS_PAPER = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 3.858, "resnet101": 7.570,
               "resnet152": 11.282}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count(name):
    assert model_stats(name).params == PARAMS[name]


@pytest.mark.parametrize("name", list(GMACS_V15))
def test_macs_match_torchvision_and_paper(name):
    assert round(model_stats(name).gmacs, 3) == GMACS_V15[name]
    assert round(model_stats(name, stride_in_1x1=True).gmacs, 3) == GMACS_PAPER[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_load_and_outputs_match(name):
    theirs = getattr(torchvision.models, name)().eval()
    ours = resnets.create_model(name).eval()
    sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(sd)
    ours.load_state_dict(sd)  # strict
    # and back again: our state_dict is a valid torchvision state_dict
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2", "resnext101_64x4d"])
def test_torchvision_family_keys_match(name):
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)()
        ours = resnets.create_model(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}


def test_dilation_matches_torchvision_and_keeps_resolution():
    kw = {"replace_stride_with_dilation": [False, True, True]}
    theirs = torchvision.models.resnet50(**kw).eval()
    ours = resnets.create_model("resnet50", **kw).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5
        assert ours.forward_features(x).shape[-1] == 8
    assert ours.output_stride == 8


def test_shortcut_options_change_parameters_not_shapes():
    params = {opt: model_stats("resnet34", shortcut=opt).params for opt in "ABC"}
    assert params["B"] == PARAMS["resnet34"]
    assert params["A"] == PARAMS["plain34"]  # option A adds no parameters
    assert params["C"] > params["B"]
    x = torch.randn(1, 3, 64, 64)
    for opt in "ABC":
        assert resnets.create_model("resnet34", shortcut=opt, num_classes=7)(x).shape == (1, 7)


def test_resnet_d_options():
    model = resnets.create_model("resnet50", stem="deep", avg_down=True, num_classes=5)
    assert isinstance(model.conv1, torch.nn.Sequential) and len(model.conv1) == 7
    assert isinstance(model.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_in_chans_and_num_classes():
    model = resnets.create_model("resnet18", in_chans=1, num_classes=3)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)


def test_features_only_resnet50_shapes_and_feature_info():
    model = resnets.create_model("resnet50", features_only=True).eval()
    outs = model(torch.randn(1, 3, 224, 224))
    chans = [info["num_chs"] for info in model.feature_info]
    reds = [info["reduction"] for info in model.feature_info]
    assert chans == [64, 256, 512, 1024, 2048] and reds == [2, 4, 8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [(1, c, 224 // r, 224 // r)
                                              for c, r in zip(chans, reds, strict=True)]
    assert not any(k.startswith("fc.") for k in model.state_dict())


def test_features_only_loads_classifier_backbone():
    clf = resnets.create_model("resnet18")
    feats = resnets.create_model("resnet18", features_only=True, out_indices=(2, 4))
    missing, unexpected = feats.load_state_dict(clf.state_dict(), strict=False)
    assert missing == [] and set(unexpected) == {"fc.weight", "fc.bias"}
    assert [i["module"] for i in feats.feature_info] == ["layer2", "layer4"]


def test_forward_features_head_and_reset_classifier():
    model = resnets.create_model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (1, 512, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 512)
    assert torch.allclose(model.forward_head(feats), model(x))
    model.reset_classifier(4)
    assert model(x).shape == (1, 4)
    model.reset_classifier(0)
    assert model(x).shape == (1, 512)


def test_default_init_is_he_normal_and_bn_identity():
    model = resnets.create_model("resnet50")
    w = model.layer3[0].conv2.weight  # 3x3, 256 -> 256: fan_out = 9 * 256
    expected_std = (2.0 / (9 * 256)) ** 0.5
    assert abs(w.std().item() - expected_std) / expected_std < 0.05
    assert torch.all(model.layer1[0].bn3.weight == 1) and torch.all(model.bn1.bias == 0)


def test_a_model_built_on_the_meta_device_skips_init_and_torch_dynamo():
    # normal_ on meta tensors runs a Python reference that imports torch._dynamo (1.5 s of
    # every `resnets predict`, which builds the model on meta to map a checkpoint's keys)
    code = ("import sys, torch\n"
            "from resnets.models.registry import build_model\n"
            "with torch.device('meta'):\n"
            "    model = build_model('resnet50')\n"
            "print(model.conv1.weight.is_meta, 'torch._dynamo' in sys.modules)")
    assert fresh_python(code) == ["True", "False"]


def test_bad_inputs_and_options_name_what_was_expected():
    model = resnets.create_model("resnet18")
    with pytest.raises(ValueError, match="expected a 3-channel input, got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="too small.*downsamples by 32"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected a batch of images \(N, C, H, W\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="unknown shortcut option 'Z'"):
        resnets.create_model("resnet18", shortcut="Z")
    with pytest.raises(ValueError, match="unknown stem 'big'"):
        resnets.create_model("resnet18", stem="big")
    with pytest.raises(ValueError, match="out_indices must be in 0..4"):
        resnets.create_model("resnet18", features_only=True, out_indices=(5,))
