"""The precision rule: ``auto`` autocasts to bf16 only where bf16 is native."""

import pytest
import torch

from resnets import devices

CPU = torch.device("cpu")


@pytest.mark.parametrize("native, want", [(True, torch.bfloat16), (False, None)])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native, want):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.resolve_amp("auto", CPU) is want
    assert devices.resolve_amp("bf16", CPU) is torch.bfloat16  # asked for, given
    assert devices.resolve_amp("none", CPU) is None


def test_auto_is_bf16_on_a_gpu_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.resolve_amp("auto", torch.device("cuda")) is torch.bfloat16


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    for avx512_bf16, amx, want in [(False, False, False), (True, False, True),
                                   (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert devices.cpu_has_native_bf16() is want


def test_unknown_amp_and_fp16_on_cpu_are_refused():
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16, auto"):
        devices.resolve_amp("fp8", CPU)
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        devices.resolve_amp("fp16", CPU)


@pytest.mark.parametrize("native, want", [(True, "bf16"), (False, "none")])
def test_amp_setting_names_what_auto_is_here(monkeypatch, native, want):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert devices.amp_setting("auto", CPU) == want
    assert devices.amp_setting("auto", torch.device("cuda")) == "bf16"
    assert [devices.amp_setting(a, CPU) for a in ("none", "bf16")] == ["none", "bf16"]
