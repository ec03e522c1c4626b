import pickle

import pytest
import torch
from torch import nn

from resnets.models.blocks import BasicBlock, Bottleneck, DropPath, ShortcutA, make_shortcut


def test_shortcut_a_subsamples_and_pads_zero_channels_evenly():
    sc = ShortcutA(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    assert sum(p.numel() for p in sc.parameters()) == 0


def test_shortcut_a_pickles_and_rejects_channel_reduction():
    sc = pickle.loads(pickle.dumps(ShortcutA(16, 32, 2)))
    assert sc(torch.zeros(1, 16, 4, 4)).shape == (1, 32, 2, 2)
    with pytest.raises(ValueError, match="cannot reduce channels"):
        ShortcutA(32, 16)


def test_make_shortcut_options():
    bn = nn.BatchNorm2d
    assert make_shortcut("A", 16, 16, 1, bn) is None
    assert isinstance(make_shortcut("A", 16, 32, 2, bn), ShortcutA)
    assert make_shortcut("B", 16, 16, 1, bn) is None
    proj = make_shortcut("B", 16, 32, 2, bn)
    assert isinstance(proj[0], nn.Conv2d) and proj[0].stride == (2, 2)
    assert isinstance(make_shortcut("C", 16, 16, 1, bn), nn.Sequential)
    avg = make_shortcut("B", 16, 32, 2, bn, avg_down=True)
    assert isinstance(avg[0], nn.AvgPool2d) and avg[1].stride == (1, 1)
    with pytest.raises(ValueError, match="expected one of 'A', 'B', 'C'"):
        make_shortcut("D", 16, 32, 2, bn)


def test_basic_block_is_the_textbook_formula():
    block = BasicBlock(8, 8).eval()
    x = torch.rand(1, 8, 6, 6)
    expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x)
    assert torch.allclose(block(x), expected)


def test_plain_block_has_no_shortcut():
    block = BasicBlock(8, 8, residual=False).eval()
    x = torch.rand(1, 8, 6, 6)
    expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))))
    assert torch.allclose(block(x), expected)


def test_bottleneck_stride_placement():
    v15 = Bottleneck(64, 32, stride=2)
    paper = Bottleneck(64, 32, stride=2, stride_in_1x1=True)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)
    assert paper.conv1.stride == (2, 2) and paper.conv2.stride == (1, 1)
    assert v15.conv3.out_channels == 128


def test_basic_block_rejects_groups():
    with pytest.raises(ValueError, match="groups=1"):
        BasicBlock(8, 8, groups=2)


def test_drop_path_drops_whole_samples_in_training_only():
    dp = DropPath(0.5).train()
    y = dp(torch.ones(1000, 4))
    per_sample = y[:, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert 350 < int((per_sample == 0).sum()) < 650
    assert torch.equal(dp.eval()(torch.ones(3, 4)), torch.ones(3, 4))
    with pytest.raises(ValueError, match="drop_path rate"):
        DropPath(1.0)
