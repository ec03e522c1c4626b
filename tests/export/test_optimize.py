import copy

import pytest
import torch
from torch import nn

import resnets
from resnets.export import InferenceModule, fold_batchnorm, optimize
from resnets.models import BasicBlock, Bottleneck, build_resnet
from tests.export.conftest import randomize_bn


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


SMALL = {"stage_channels": (16, 32, 64, 128), "num_classes": 10}


@pytest.mark.parametrize("build, size", [
    (lambda: resnets.create_model("resnet20"), 32),  # option A shortcuts
    (lambda: build_resnet(BasicBlock, [1, 1, 1, 1], stem="deep", avg_down=True, **SMALL),
     64),  # deep stem (BN after a Sequential), pooled projection shortcuts
    (lambda: build_resnet(Bottleneck, [1, 1, 2, 1], groups=4, width_per_group=8, **SMALL),
     64),  # Bottleneck, grouped 3x3, conv+BN projections
], ids=["cifar", "deep-stem", "resnext"])
def test_folded_model_equals_eval_mode_within_1e_5(build, size):
    model = randomize_bn(build())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        out = optimize(model, channels_last=False)(x)
    assert _count_bn(optimize(model)) == 0
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_optimize_leaves_the_input_model_untouched():
    model = randomize_bn(resnets.create_model("resnet20"))
    before = copy.deepcopy(model.state_dict())
    model.train()
    optimize(model)
    assert model.training and _count_bn(model) == 19
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_optimized_default_is_channels_last_and_matches_eager():
    model = randomize_bn(resnets.create_model("resnet20"))
    fast = optimize(model)
    assert isinstance(fast, InferenceModule)
    conv = fast.model.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.bias is not None  # the BN shift lives here now
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5, rtol=0)


def test_bn_without_running_stats_is_left_in_place():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(folded(x), model.eval()(x))


def test_bf16_gives_autocast_numbers_and_stays_close_to_fp32():
    model = randomize_bn(resnets.create_model("resnet20"))
    x = torch.randn(4, 3, 32, 32)
    fast = optimize(model, bf16=True)
    folded = optimize(model)  # fp32, same folding
    with torch.no_grad():
        out = fast(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = folded(x)
        ref = model(x)
    assert out.dtype == torch.float32
    # far below one bf16 step (2**-7 relative): the same computation, not just a close one
    assert (out - auto.float()).abs().max() <= 1e-3 * ref.abs().max()
    cosine = nn.functional.cosine_similarity(out, ref, dim=1)
    assert cosine.min() > 0.99


def test_compile_wraps_the_module_without_running_it():
    compiled = optimize(resnets.create_model("resnet20"), compile=True)
    assert hasattr(compiled, "_orig_mod") and isinstance(compiled._orig_mod, InferenceModule)


@pytest.mark.slow
def test_compiled_matches_eager():
    model = randomize_bn(resnets.create_model("resnet20"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(optimize(model, compile=True)(x), model(x), atol=1e-4)


def test_wrong_channel_count_is_a_one_line_error():
    fast = optimize(resnets.create_model("resnet20"))
    with pytest.raises(ValueError, match="expected a 3-channel input, got 4 channels"):
        fast(torch.randn(1, 4, 32, 32))


def test_optimize_is_exported_at_the_top_level():
    assert resnets.optimize is optimize
