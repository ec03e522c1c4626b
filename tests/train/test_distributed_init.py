"""init_distributed under torchrun's environment: the device asked for, or an error."""

import pytest
import torch

from resnets.train.distributed import init_distributed


@pytest.fixture()
def torchrun_env(monkeypatch):
    """Rank 0 of 2 as torchrun starts it; the process group is recorded, not started."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    started: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, *a, **k: started.append(backend))
    return started


def test_ddp_refuses_cuda_where_there_is_none_instead_of_training_on_the_cpu(
        torchrun_env, monkeypatch):
    # one process refuses --device cuda without CUDA (resolve_device); DDP must too, not
    # fall back to gloo on the CPU without a word
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        init_distributed("cuda")
    assert torchrun_env == []


def test_ddp_refuses_one_gpu_index_for_every_rank_instead_of_training_on_the_cpu(
        torchrun_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        init_distributed("cuda:1")
    assert torchrun_env == []
    info = init_distributed("cuda")  # each rank takes the GPU of its LOCAL_RANK
    assert (info.device, info.rank, info.world, torchrun_env) == (
        torch.device("cuda", 0), 0, 2, ["nccl"])


def test_ddp_on_the_cpu_uses_gloo(torchrun_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = init_distributed("auto")
    assert (info.device, info.world, torchrun_env) == (torch.device("cpu"), 2, ["gloo"])
    with pytest.raises(ValueError, match="unknown device"):
        init_distributed("gpu")
