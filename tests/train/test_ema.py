"""EMA of weights: the decay sequence, warm-up, buffers and resuming."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from resnets.train.ema import ema_decay_at, ema_update_fn, weight_ema


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _perturb(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        model[1].running_mean.add_(1.0)


def test_warmup_decay_sequence():
    assert ema_decay_at(0.999, 0, warmup=True) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90, warmup=True) == pytest.approx(0.91)
    assert ema_decay_at(0.999, 10**6, warmup=True) == 0.999  # capped at the set decay
    assert ema_decay_at(0.999, 0, warmup=False) == 0.999


def test_without_warmup_equals_torch_ema():
    model = _net()
    ours, theirs = weight_ema(model, 0.9), AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for step in range(5):
        _perturb(model, step)
        ours.update_parameters(model)
        theirs.update_parameters(model)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_warmup_follows_the_formula_for_weights_and_buffers():
    model = _net()
    ema = weight_ema(model, 0.999, warmup=True)
    fixed = weight_ema(model, 0.999)
    ema.update_parameters(model)  # the first update copies
    fixed.update_parameters(model)
    expected_w = model[0].weight.detach().clone()
    expected_rm = model[1].running_mean.clone()
    for k in range(1, 4):
        _perturb(model, k)
        ema.update_parameters(model)
        fixed.update_parameters(model)
        d = k / (9 + k)  # (1 + n) / (10 + n) with n = k - 1 earlier averaging steps
        expected_w = d * expected_w + (1 - d) * model[0].weight.detach()
        expected_rm = d * expected_rm + (1 - d) * model[1].running_mean
    torch.testing.assert_close(ema.module[0].weight, expected_w)
    torch.testing.assert_close(ema.module[1].running_mean, expected_rm)
    # early on, the warmed-up average follows the model; the fixed one lags at the start
    lag = (ema.module[0].weight - model[0].weight).abs().max()
    fixed_lag = (fixed.module[0].weight - model[0].weight).abs().max()
    assert lag < fixed_lag / 2


def test_resumed_ema_continues_the_same_sequence():
    model = _net()
    straight = weight_ema(model, 0.99, warmup=True)
    for step in range(6):
        _perturb(model, step)
        straight.update_parameters(model)

    model = _net()
    first = weight_ema(model, 0.99, warmup=True)
    for step in range(3):
        _perturb(model, step)
        first.update_parameters(model)
    resumed = weight_ema(model, 0.99, warmup=True)
    resumed.load_state_dict(first.state_dict())
    for step in range(3, 6):
        _perturb(model, step)
        resumed.update_parameters(model)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_decay_is_an_error():
    with pytest.raises(ValueError, match="EMA decay must be in"):
        ema_update_fn(1.0)
