"""The CUDA paths of training and evaluation. Skipped without a GPU (CI has none); run on
a GPU machine with ``pytest tests/train/test_cuda.py``."""

from __future__ import annotations

import json

import pytest
import torch

from resnets import create_model
from resnets.data.folder import load_folder
from resnets.tasks.classify import evaluate_folder
from resnets.train import Trainer
from resnets.train.data import MemoryBatches
from resnets.train.run_folder import load_training_state as load_checkpoint
from resnets.weights import load_classifier
from resnets.weights.preprocessing import CIFAR_MEAN, CIFAR_STD
from tests.synthetic import read_weights

from .test_loop import tiny_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")




def test_batches_on_cuda_equal_the_cpu_batches(tiny_data, tmp_path):
    """Same seed, same crops, flips and cutout squares on either device: the random draws
    come from one CPU generator, only the pixels move."""
    data = load_folder(tiny_data / "train")
    out = {}
    for dev in ("cpu", "cuda"):
        mem = MemoryBatches(data, 8, torch.device(dev), CIFAR_MEAN, CIFAR_STD, True,
                            cutout_size=4)
        gen = torch.Generator().manual_seed(3)
        out[dev] = [(x.cpu(), y.cpu()) for x, y, _ in mem.batches(0, 1, generator=gen)]
    assert len(out["cpu"]) == len(out["cuda"]) > 0
    for (xc, yc), (xg, yg) in zip(out["cpu"], out["cuda"], strict=True):
        assert torch.equal(yc, yg)
        torch.testing.assert_close(xg, xc, rtol=0, atol=1e-6)


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_training_on_cuda_learns_and_its_weights_load_on_cpu(tiny_data, tmp_path, amp):
    run = tmp_path / amp
    cfg = tiny_cfg(tiny_data, run, epochs=4, device="cuda", amp=amp, channels_last=True)
    result = Trainer(cfg, quiet=True).fit()
    assert result["test_acc"] > 80.0
    ckpt = load_checkpoint(run / "last.pt")  # maps every storage to the CPU
    if amp == "fp16":  # the scaler ran and its state was saved
        assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0
    state, meta = read_weights(run / "model.safetensors")
    assert all(t.device.type == "cpu" for t in state.values())
    create_model("resnet20", num_classes=3).load_state_dict(state)  # strict


def test_eval_on_cuda_matches_cpu(tiny_data, tmp_path):
    Trainer(tiny_cfg(tiny_data, tmp_path / "run", epochs=2), quiet=True).fit()
    weights = tmp_path / "run" / "model.safetensors"
    reports = {dev: evaluate_folder(load_classifier(weights, "resnet20", device=dev),
                                    tiny_data / "test", tta=True)
               for dev in ("cpu", "cuda")}
    assert reports["cuda"].n == reports["cpu"].n == 18
    assert reports["cuda"].top1 == pytest.approx(reports["cpu"].top1)


def test_training_with_cuda_graphs_learns(tiny_data, tmp_path):
    """`--compile --set compile_mode=reduce-overhead`: torch.compile with CUDA graphs, which
    measured 3.9x eager's images/s for ResNet-56 at batch 256 on an H200 (BENCHMARKS.md).
    The loop reads each step's loss and logits before the next replay overwrites them."""
    cfg = tiny_cfg(tiny_data, tmp_path / "graphs", epochs=4, device="cuda", amp="bf16",
                   channels_last=True, compile=True, compile_mode="reduce-overhead")
    result = Trainer(cfg, quiet=True).fit()
    assert result["test_acc"] > 80.0
    state, _ = read_weights(tmp_path / "graphs" / "model.safetensors")
    create_model("resnet20", num_classes=3).load_state_dict(state)  # strict


def test_sr_training_runs_under_cuda_graphs_with_nothing_on_the_cpu(tmp_path):
    """train-sr with compile_mode=reduce-overhead (scripts/gpu_sr.sh's setting): every
    scale's graph is recorded as a CUDA graph, none skipped (a CPU tensor inside the
    compiled forward, such as the bicubic skip's taps, would keep it off), and it learns."""
    from torch._dynamo.utils import counters

    from resnets.train.sr import SRTrainConfig, SRTrainer
    from tests.conftest import shared_path

    counters.clear()
    torch._dynamo.reset()
    cfg = SRTrainConfig(model="edsr_tiny", data=str(shared_path("sr")), out=str(tmp_path / "r"),
                        patch_size=48, batch_size=16, epochs=2, steps_per_epoch=60, lr=1e-3,
                        val_count=2, report_sets=(), device="cuda", amp="bf16", compile=True,
                        compile_mode="reduce-overhead")
    SRTrainer(cfg, quiet=True).fit()
    torch._dynamo.reset()
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
