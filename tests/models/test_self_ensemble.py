"""The x8 geometric self-ensemble: the average of the 8 poses, turned back."""

import pytest
import torch

from resnets.models.self_ensemble import POSES, SelfEnsemble, from_pose, to_pose
from resnets.models.sr import create_sr_model


def test_poses_are_the_8_distinct_symmetries_and_each_is_undone():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    posed = [to_pose(x, k, flip) for k, flip in POSES]
    assert len({tuple(p.flatten().tolist()) + tuple(p.shape) for p in posed}) == 8
    for (k, flip), p in zip(POSES, posed, strict=True):
        assert torch.equal(from_pose(p, k, flip), x)


def test_equals_the_manual_average_of_the_8_passes():
    model = create_sr_model("edsr_tiny", scales=(2, 3)).eval()
    x = torch.rand(2, 3, 7, 10)  # not square: half the poses swap height and width
    with torch.no_grad():
        manual = torch.stack([from_pose(model(to_pose(x, k, flip), 3), k, flip)
                              for k, flip in POSES]).mean(0)
        ours = SelfEnsemble(model)(x, 3)
        single = model(x, 3)
    assert ours.shape == (2, 3, 21, 30)
    torch.testing.assert_close(ours, manual, rtol=0, atol=1e-6)
    assert (ours - single).abs().max() > 1e-3  # a random network is not symmetric


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_a_rotation_and_flip_equivariant_model_is_unchanged(scale):
    bicubic = create_sr_model("bicubic")  # the same kernel along both axes, centred pixels
    x = torch.rand(1, 3, 9, 6)
    torch.testing.assert_close(SelfEnsemble(bicubic)(x, scale), bicubic(x, scale),
                               rtol=0, atol=1e-6)


def test_wrapper_passes_the_model_description_through():
    model = create_sr_model("edsr_tiny", scales=(2, 4))
    wrapped = SelfEnsemble(model)
    assert wrapped.scales == (2, 4) and wrapped.config.in_chans == 3
    with pytest.raises(ValueError, match=r"expected a \(N, C, H, W\) batch"):
        wrapped(torch.rand(3, 8, 8), 2)
