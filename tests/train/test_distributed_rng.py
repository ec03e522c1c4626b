"""Each DDP rank draws its own augmentations (crops, flips, cutout; mixup/cutmix and drop
path through the global RNG), a single process keeps its stream, and a mid-epoch resume
gives every rank its own streams back."""

import json
import random
from types import SimpleNamespace

import pytest
import torch

import resnets.train.loop as loop
from resnets.train.data import epoch_seed
from resnets.train.distributed import DistInfo
from resnets.train.run_folder import rng_states, set_rng_states
from tests.train.test_distributed import env, run_ranks  # noqa: F401 (a fixture)


def test_rank_0_keeps_the_single_process_augmentation_seed_and_other_ranks_differ():
    for seed in (0, 1, 12345, -3, 2**40):
        for epoch in range(5):
            # rank 0 (a single process) seeds as before per-rank seeds existed
            assert loop.augment_seed(seed, epoch) == epoch_seed(seed, epoch) + 7
            assert loop.augment_seed(seed, epoch, 0) == epoch_seed(seed, epoch) + 7
        assert loop.rank_seed(seed, 0) == seed
    # a CPU generator is seeded with the low 32 bits alone: they must differ
    for seed in (0, 7, 2**32 - 1):
        seeds = {loop.augment_seed(seed, e, r) % 2**32 for e in range(200) for r in range(64)}
        assert len(seeds) == 200 * 64, "every rank and epoch needs a stream of its own"
    assert all(0 <= loop.rank_seed(s, r) < 2**64 for s in (-5, 2**63) for r in (1, 7))
    draws = [torch.randint(0, 9, (64,), generator=torch.Generator().manual_seed(
        loop.augment_seed(0, 0, r))) for r in range(2)]
    assert not torch.equal(*draws)


def _fake_trainer(rank, world, state):
    return SimpleNamespace(dist=DistInfo(rank, world), resume_state=state,
                           cfg=SimpleNamespace(seed=0))


def _states(seed):
    g = torch.Generator().manual_seed(seed)
    torch.randint(0, 9, (5,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return g.get_state(), rng_states()


@pytest.fixture()
def keep_rng():
    saved = rng_states()
    yield
    set_rng_states(saved)


def test_a_resumed_rank_takes_its_own_streams_from_the_checkpoint(keep_rng):
    (g0, rng0), (g1, rng1) = _states(10), _states(20)
    state = {"generator": g0, "rng": rng0,
             "ranks": [{"generator": g0, "rng": rng0}, {"generator": g1, "rng": rng1}]}
    for rank, (g, rng) in enumerate(((g0, rng0), (g1, rng1))):
        gen = torch.Generator()
        loop.Trainer._restore_rng(_fake_trainer(rank, 2, state), gen, 0)
        assert torch.equal(gen.get_state(), g)
        assert torch.equal(torch.get_rng_state(), rng["torch"])


def test_a_checkpoint_without_per_rank_states_reseeds_the_other_ranks(keep_rng):
    """Rank 0's states alone (a single process, or DDP before per-rank states): rank 0 takes
    them as before; any other rank starts its epoch's own streams (not fast-forwarded)."""
    g0, rng0 = _states(10)
    for state in ({"generator": g0, "rng": rng0}, {"generator": g0, "rng": rng0, "ranks": None}):
        gen = torch.Generator()
        loop.Trainer._restore_rng(_fake_trainer(0, 1, state), gen, 3)
        assert torch.equal(gen.get_state(), g0)
        assert torch.equal(torch.get_rng_state(), rng0["torch"])
        loop.Trainer._restore_rng(_fake_trainer(1, 2, state), gen, 3)
        expected = torch.Generator().manual_seed(loop.augment_seed(0, 3, 1))
        assert torch.equal(gen.get_state(), expected.get_state())
        assert not torch.equal(torch.get_rng_state(), rng0["torch"])


def test_checkpoints_gather_every_ranks_streams(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    assert loop.Trainer._rank_states(_fake_trainer(0, 1, None), gen) is None
    other = {"generator": torch.Generator().manual_seed(6).get_state(), "rng": rng_states()}

    def all_gather_object(out, obj):  # rank 1 of 2: rank 0's arrives first
        out[:] = [other, obj]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    ranks = loop.Trainer._rank_states(_fake_trainer(1, 2, None), gen)
    assert ranks[0] is other and torch.equal(ranks[1]["generator"], gen.get_state())
    assert ranks[1]["rng"]["python"] == list(random.getstate()[1])


DRIVER = """
import hashlib, json, sys, torch
import resnets.train.data as data_mod
import resnets.train.loop as loop
from resnets.train import Trainer, paper_recipe

data, out = sys.argv[1], sys.argv[2]
log = []  # per training batch: (augmentation generator, global RNG) state digests

def digest(t):
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()[:16]

real_batches = data_mod.MemoryBatches.batches
def batches(self, seed, epoch, start=0, generator=None):
    for item in real_batches(self, seed, epoch, start, generator):
        if generator is not None:
            log.append([epoch, digest(generator.get_state()), digest(torch.get_rng_state())])
        yield item
data_mod.MemoryBatches.batches = batches

class Crash(Exception):
    pass

real_save = loop.Trainer._save
def crashing_save(self, names, state, epoch):  # killed after its first checkpoint
    real_save(self, names, state, epoch)
    loop.Trainer._save = real_save
    raise Crash

def cfg(run):
    return paper_recipe(model="resnet20", data=data, out=f"{out}/{run}", epochs=2,
                        batch_size=8, lr=0.05, amp="none", val_fraction=0.0, seed=0,
                        channels_last=False, in_memory="yes", cutout=4, mixup=0.2,
                        cutmix=0.2, checkpoint_every=1)

runs = {}
t = Trainer(cfg("ref"), quiet=True)
t.fit()
rank = t.dist.rank
runs["ref"] = log[:]
log.clear()
loop.Trainer._save = crashing_save
try:
    Trainer(cfg("cut"), quiet=True).fit()
except Crash:
    pass
torch.distributed.barrier()  # rank 0 has written last.pt
runs["cut"] = log[:]
log.clear()
r = Trainer(cfg("cut"), resume=True, quiet=True)
r.fit()
runs["resumed"] = log[:]
state = torch.load(f"{out}/cut/last.pt", weights_only=True)
weights = {k: torch.equal(v, r.model.state_dict()[k]) for k, v in t.model.state_dict().items()}
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"runs": runs, "weights_equal": weights, "world": t.dist.world,
               "saved_ranks": len(state.get("ranks") or [])}, f)
torch.save(r.model.state_dict(), f"{out}/rank{rank}.pt")
"""


def test_ddp_ranks_draw_their_own_augmentations_and_resume_them_exactly(tmp_path, env):  # noqa: F811
    """Two gloo ranks: each rank's augmentation generator and global RNG (mixup, cutmix)
    differ batch by batch (they were the same: every rank seeded alike); a run killed
    mid-epoch and resumed draws what the run left alone drew, on every rank, and ends with
    the same weights, bit for bit."""
    out = run_ranks(tmp_path, env, DRIVER, per_class=(16, 2), timeout=300)
    r0, r1 = (json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["world"] == 2
    ref0, ref1 = r0["runs"]["ref"], r1["runs"]["ref"]
    assert len(ref0) == len(ref1) == 2 * 3  # 2 epochs of 3 batches a rank
    for a, b in zip(ref0, ref1, strict=True):
        assert a[1] != b[1], "ranks drew the same crops, flips and cutout squares"
        assert a[2] != b[2], "ranks drew the same mixup/cutmix (global RNG)"
    assert r0["saved_ranks"] == 2  # every rank's streams are in the checkpoint
    for rank in (r0, r1):
        runs = rank["runs"]
        cut = len(runs["cut"])
        assert 0 < cut < 3  # killed mid-epoch 0
        assert runs["cut"] + runs["resumed"] == runs["ref"]
        assert all(rank["weights_equal"].values())
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    params = [k for k in w0 if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(w0[k], w1[k]) for k in params), "DDP ranks must hold equal weights"
