import pickle

import pytest
import torch
from torch import nn

import resnets
from resnets.models.blocks import BasicBlock, ShortcutA
from resnets.models.stats import model_stats

# He et al. 2016 Table 6 (0.27M .. 19.4M), exact counts with option A shortcuts.
PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
          "resnet110": 1_727_962, "resnet1202": 19_421_274}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count(name):
    assert model_stats(name).params == PARAMS[name]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_has_same_parameters_and_no_shortcuts(depth):
    assert model_stats(f"plain{depth}").params == PARAMS[f"resnet{depth}"]
    with torch.device("meta"):
        plain = resnets.create_model(f"plain{depth}")
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == (depth - 2) // 2
    assert all(not b.residual and b.downsample is None for b in blocks)


def test_layout_follows_section_4_2():
    model = resnets.create_model("resnet56", features_only=True, out_indices=(1, 2, 3))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [i["reduction"] for i in model.feature_info] == [1, 2, 4]
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2  # only where width doubles


def test_option_b_and_c_add_projection_parameters():
    a, b, c = (model_stats("resnet20", shortcut=o).params for o in "ABC")
    # B: two projections (16->32, 32->64) with BN; C: one on every one of the 9 blocks.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    stage1 = 3 * (16 * 16 + 2 * 16)
    stage2 = (16 * 32 + 2 * 32) + 2 * (32 * 32 + 2 * 32)
    stage3 = (32 * 64 + 2 * 64) + 2 * (64 * 64 + 2 * 64)
    assert c - a == stage1 + stage2 + stage3
    for o in "ABC":
        assert resnets.create_model("resnet20", shortcut=o)(torch.randn(2, 3, 32, 32)).shape \
            == (2, 10)


def test_zero_init_residual_makes_identity_blocks_pass_input_through():
    model = resnets.create_model("resnet56", zero_init_residual=True).train()
    x = torch.randn(4, 3, 32, 32)
    checked = 0
    for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
        if block.downsample is not None:
            continue
        inp = torch.relu(torch.randn(4, block.conv1.in_channels, 8, 8))  # post-ReLU input
        assert torch.equal(block(inp), inp)
        checked += 1
    assert checked == 27 - 2
    assert model(x).shape == (4, 10)


def test_plain_net_cannot_start_as_identity():
    plain = resnets.create_model("plain20", zero_init_residual=True).train()
    block = plain.layer1[0]
    inp = torch.relu(torch.randn(2, 16, 8, 8))
    assert not torch.equal(block(inp), inp)


def test_backward_reaches_every_parameter():
    model = resnets.create_model("resnet20", shortcut="B", drop_path_rate=0.1)
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_drop_path_rates_rise_linearly():
    model = resnets.create_model("resnet20", drop_path_rate=0.2)
    rates = [m.drop_path.drop_prob for m in model.modules() if isinstance(m, BasicBlock)
             if not isinstance(m.drop_path, nn.Identity)]
    assert rates[-1] == pytest.approx(0.2) and rates == sorted(rates) and len(rates) == 8


def _same_outputs(a, b, x):
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


def test_pickle_round_trip():
    model = resnets.create_model("resnet20").eval()
    clone = pickle.loads(pickle.dumps(model))
    assert _same_outputs(model, clone, torch.randn(2, 3, 32, 32))


def test_torchscript():
    model = resnets.create_model("resnet20").eval()
    scripted = torch.jit.script(model)
    assert _same_outputs(model, scripted, torch.randn(2, 3, 32, 32))


def test_torch_export_with_dynamic_batch():
    model = resnets.create_model("resnet20").eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    prog = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                               dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 32, 32)
    assert _same_outputs(model, prog.module(), x)


@pytest.mark.slow  # 16 s; make test compiles in tests/train (compiled training learns)
def test_torch_compile():
    model = resnets.create_model("resnet20").eval()
    compiled = torch.compile(model)
    assert _same_outputs(model, compiled, torch.randn(2, 3, 32, 32))


def test_depth_must_be_6n_plus_2():
    from resnets.models.cifar import cifar_resnet

    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(21)
