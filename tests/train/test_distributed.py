"""Two CPU processes under torchrun (gloo) against one process with the same global batch."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.synthetic import make_folder

DRIVER = """
import json, sys, torch
from resnets.train import Trainer, paper_recipe
data, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = paper_recipe(model="resnet20", data=data, out=out, epochs=2, batch_size=batch, lr=0.05,
                   amp="none", val_fraction=0.25, channels_last=False, seed=0)
t = Trainer(cfg, quiet=True)
t.fit()
rank = t.dist.rank
orders = [t.train_data.order(cfg.seed, e)[: len(t.train_data) * batch].tolist()
          for e in range(cfg.epochs)]
torch.save(t.model.state_dict(), f"{out}/rank{rank}.pt")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"orders": orders, "world": t.dist.world, "backend":
               str(torch.distributed.get_backend()) if t.dist.world > 1 else "none"}, f)
"""


def run_group(cmd: list[str], env: dict[str, str], timeout: float) -> None:
    """``subprocess.run(cmd, check=True, timeout=timeout)`` that leaves nothing running when
    the command times out, fails or is interrupted (subprocess.run kills the launcher alone,
    and torchrun's workers ran on). The launcher starts in its own session, and its process
    group is ended before the error propagates (:func:`end_group`)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except BaseException:
        end_group(proc)
        raise
    if code != 0:
        end_group(proc)
        raise subprocess.CalledProcessError(code, cmd)


def end_group(proc: subprocess.Popen) -> None:
    """End ``proc``, started with ``start_new_session=True``, and its process group. torchrun
    starts each worker in a session of its own (torch's elastic ``SubprocessHandler``), out of
    reach of the launcher's group, so the launcher gets SIGTERM first, on which it stops its
    workers (with SIGKILL after 30 s); then whatever is left in its group gets SIGKILL."""
    with contextlib.suppress(ProcessLookupError):  # the group has no member left
        os.killpg(proc.pid, signal.SIGTERM)  # the group's id is the launcher's pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=45)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "RESNETS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def run_ranks(tmp_path: Path, env: dict[str, str], source: str, *args: str,
              per_class: tuple[int, int] = (32, 4), timeout: float = 300) -> Path:
    """``source`` as a driver script on two gloo ranks under torchrun, given a synthetic
    image folder, an output folder and ``args``; returns the output folder."""
    data = make_folder(tmp_path / "data", per_class=per_class)
    driver = tmp_path / "driver.py"
    driver.write_text(source)
    out = tmp_path / "ddp"
    out.mkdir()
    # --standalone: torchrun binds a free port for its rendezvous itself, so tests running at
    # once never share one (a port found free here could be taken before torchrun bound it)
    run_group([sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(driver), str(data), str(out), *args],
              env, timeout=timeout)
    return out


def equal_rank_weights(out: Path) -> dict[str, torch.Tensor]:
    """Rank 0's learned tensors, after checking rank 1 holds the same (BN statistics are
    per rank)."""
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    params = {k: v for k, v in w0.items() if "running" not in k and "num_batches" not in k}
    assert all(torch.equal(v, w1[k]) for k, v in params.items()), \
        "DDP ranks must hold equal weights"
    return params


def test_two_process_ddp_matches_single_process(tmp_path, env):
    ddp_out = run_ranks(tmp_path, env, DRIVER, "8", timeout=300)
    single_out = tmp_path / "single"
    single_out.mkdir()
    run_group([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "data"),
               str(single_out), "16"], env, timeout=300)

    r0 = json.loads((ddp_out / "rank0.json").read_text())
    r1 = json.loads((ddp_out / "rank1.json").read_text())
    assert r0["world"] == 2 and r0["backend"] == "gloo"
    for e in range(2):
        assert not set(r0["orders"][e]) & set(r1["orders"][e]), "ranks must see disjoint data"
        assert len(r0["orders"][e]) == len(r1["orders"][e]) > 0

    equal_rank_weights(ddp_out)

    # Only rank 0 logs; the loss tolerance covers per-rank BN statistics on CPU.
    ddp_rows = [json.loads(x) for x in (ddp_out / "metrics.jsonl").read_text().splitlines()]
    one_rows = [json.loads(x) for x in (single_out / "metrics.jsonl").read_text().splitlines()]
    assert abs(ddp_rows[-1]["train_loss"] - one_rows[-1]["train_loss"]) < 0.25
    assert not (ddp_out / "rank1_metrics.jsonl").exists()


NAN_DRIVER = """
import json, sys, torch
import torch.nn.functional as F
from resnets.train import Trainer, paper_recipe
data, out = sys.argv[1], sys.argv[2]
rank = int(__import__("os").environ["RANK"])
real, calls = F.cross_entropy, [0]
def poisoned(*args, **kwargs):  # rank 1 alone sees NaN losses at its steps 2 and 3
    calls[0] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if rank == 1 and calls[0] in (2, 3) else loss
F.cross_entropy = poisoned
cfg = paper_recipe(model="resnet20", data=data, out=out, epochs=1, batch_size=8, lr=0.05,
                   amp="none", val_fraction=0.25, channels_last=False, seed=0,
                   max_nonfinite_losses=3)
t = Trainer(cfg, quiet=True)
t.fit()
torch.save(t.model.state_dict(), f"{out}/rank{rank}.pt")
"""


def test_ddp_ranks_skip_a_non_finite_step_together_and_stay_equal(tmp_path, env):
    """One rank's NaN loss must make every rank skip that step: a rank that skipped alone
    would leave the others' gradient all-reduce waiting (a hang) or the weights apart."""
    params = equal_rank_weights(run_ranks(tmp_path, env, NAN_DRIVER))
    assert all(torch.isfinite(v).all() for v in params.values())


EMPTY_DRIVER = """
import json, sys, torch
from resnets.train import Trainer, paper_recipe
data, out = sys.argv[1], sys.argv[2]
rank = int(__import__("os").environ["RANK"])
cfg = paper_recipe(model="resnet20", data=data, out=out, epochs=1, batch_size=8, lr=0.05,
                   amp="none", val_fraction=0.25, channels_last=False, seed=0,
                   in_memory="no", workers=0)
t = Trainer(cfg, quiet=True)
assert not t.in_memory
real = t.train_data.batches
def batches(seed, epoch, start=0, generator=None):  # rank 1's second batch: unreadable only
    for b, (x, y, idx) in enumerate(real(seed, epoch, start, generator), start):
        yield (x[:0], y[:0], idx[:0]) if rank == 1 and b == 1 else (x, y, idx)
t.train_data.batches = batches
updates = [0]
step = t.optimizer.step
def counted(*args, **kwargs):
    updates[0] += 1
    return step(*args, **kwargs)
t.optimizer.step = counted
t.fit()
torch.save(t.model.state_dict(), f"{out}/rank{rank}.pt")
json.dump({"steps": updates[0], "schedule": t.scheduler.last_epoch,
           "batches": len(t.train_data)}, open(f"{out}/rank{rank}.json", "w"))
"""


def test_ddp_ranks_skip_a_streamed_batch_of_unreadable_files_together(tmp_path, env):
    """A streamed batch whose files are all unreadable comes empty on one rank: every rank
    must skip that step (one rank skipping alone left the others waiting in the all-reduce)."""
    out = run_ranks(tmp_path, env, EMPTY_DRIVER)
    equal_rank_weights(out)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == r0["batches"] - 1, "one step skipped by both ranks"
    # the schedule follows the step index, the skipped step included
    assert r0["schedule"] == r1["schedule"] == r0["batches"]


ACCUM_DRIVER = """
import json, sys, torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from resnets.train import Trainer, paper_recipe
data, out, compile = sys.argv[1], sys.argv[2], sys.argv[3] == "compile"
rank = int(__import__("os").environ["RANK"])
cfg = paper_recipe(model="resnet20", data=data, out=out, epochs=1, batch_size=4, lr=0.05,
                   amp="none", val_fraction=0.25, channels_last=False, seed=0, accum_steps=2,
                   compile=compile)
t = Trainer(cfg, quiet=True)
synced = [0]
def count(state, bucket):  # the default all-reduce, counting backwards that synchronise
    synced[0] += bucket.index() == 0
    return allreduce_hook(state, bucket)
t.ddp.register_comm_hook(None, count)  # the DDP module (under the compiled wrapper if any)
t.fit()
torch.save(t.model.state_dict(), f"{out}/rank{rank}.pt")
json.dump({"synced": synced[0], "steps": t.scheduler.last_epoch, "batches": len(t.train_data)},
          open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.parametrize("compile", [
    "eager", pytest.param("compile", marks=pytest.mark.slow)])  # compiling: tens of seconds
def test_ddp_accumulation_all_reduces_once_per_optimizer_step(tmp_path, env, compile):
    """With accum_steps=2 the first backward of each window keeps its gradients local (DDP's
    no_sync) and the second all-reduces their sum: half the all-reduces, equal weights. Under
    torch.compile too, where the DDP module runs inside the compiled wrapper."""
    out = run_ranks(tmp_path, env, ACCUM_DRIVER, compile,
                    timeout=600 if compile == "compile" else 300)
    equal_rank_weights(out)
    for r in (0, 1):
        rec = json.loads((out / f"rank{r}.json").read_text())
        assert rec["steps"] == rec["batches"] // 2 > 0
        assert rec["synced"] == rec["steps"], "one all-reduce per optimizer step"


AUTO_MEMORY_DRIVER = """
import json, os, sys, torch
import resnets.train.data as train_data
from resnets.train import Trainer, paper_recipe
data, out = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
train_data.available_memory = lambda: 10**12 if rank == 0 else 1  # rank 1: nothing free
cfg = paper_recipe(model="resnet20", data=data, out=out, epochs=1, batch_size=8, lr=0.05,
                   amp="none", val_fraction=0.25, channels_last=False, seed=0,
                   in_memory="auto", workers=0)
t = Trainer(cfg, quiet=True)
broken = 0
if rank == 1 and not t.in_memory:  # three files of rank 1's own first batch
    _, _, idx = next(iter(t.train_data.batches(cfg.seed, 0, 0, torch.Generator())))
    for i in idx.tolist()[:3]:
        t.train_data.dataset.paths[i].write_bytes(b"not an image")
        broken += 1
result = t.fit()
torch.save(t.model.state_dict(), f"{out}/rank{rank}.pt")
json.dump({"in_memory": t.in_memory, "reason": t.data_reason, "broken": broken,
           "skipped": result["skipped_images"]}, open(f"{out}/rank{rank}.json", "w"))
"""


def test_ddp_ranks_agree_on_memory_and_count_every_ranks_unreadable_files(tmp_path, env):
    """in_memory=auto is decided by each rank from its own free memory: ranks that disagreed
    ran different pipelines (a collective on one side only). All stream when any would; and
    the unreadable files rank 1 found are in the result rank 0 writes."""
    out = run_ranks(tmp_path, env, AUTO_MEMORY_DRIVER)
    equal_rank_weights(out)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["in_memory"] is r1["in_memory"] is False, r0["reason"]
    assert "another process has less free memory" in r0["reason"]
    assert r1["broken"] == 3 and r0["skipped"] == r1["skipped"] == 3
