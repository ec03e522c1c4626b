"""Knowledge distillation: the loss, the teacher checks, and training with a teacher."""

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from resnets.cli import app
from resnets.train import Trainer
from resnets.train.distill import distillation_loss
from tests.synthetic import make_folder, read_weights
from tests.train.test_loop import tiny_cfg


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    # a module fixture runs before the function-scoped autouse one that pins one thread;
    # pin it here too, so the teacher is the same whichever tests ran before
    out = tmp_path_factory.mktemp("teacher") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = Trainer(tiny_cfg(tiny_data, out, epochs=4), quiet=True).fit()
    finally:
        torch.set_num_threads(threads)
    assert result["test_acc"] > 80.0
    return out / "model.safetensors"



def test_loss_blends_hard_and_soft_terms():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    assert distillation_loss(s, t, y, 0.0, 4.0).equal(F.cross_entropy(s, y))
    soft = (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1) - F.log_softmax(s / 4, 1))).sum(1)
    expected = 0.3 * F.cross_entropy(s, y, label_smoothing=0.1) + 0.7 * 16 * soft.mean()
    torch.testing.assert_close(distillation_loss(s, t, y, 0.7, 4.0, 0.1), expected)
    assert distillation_loss(s, s, y, 1.0, 2.0).abs() < 1e-6  # agreeing with the teacher


def test_student_learns_from_teacher(tiny_data, teacher, tmp_path):
    # On this 16x16 toy task the teacher's logits reach ~125 and it is wrong on a quarter
    # of the augmented crops; alpha 0.2 learned at 4 of 4 seeds, 0.5 failed (67%) at seed 0.
    cfg = tiny_cfg(tiny_data, tmp_path / "student", epochs=4, teacher=str(teacher),
                   distill_alpha=0.2, teacher_flip=True)
    result = Trainer(cfg, quiet=True).fit()
    assert result["test_acc"] > 80.0
    state, meta = read_weights(tmp_path / "student" / "model.safetensors")
    assert meta["config"]["teacher"] == str(teacher)
    assert not any(k.startswith("teacher") for k in state)


def test_alpha_zero_trains_exactly_as_without_a_teacher(tiny_data, teacher, tmp_path):
    Trainer(tiny_cfg(tiny_data, tmp_path / "plain", epochs=1), quiet=True).fit()
    Trainer(tiny_cfg(tiny_data, tmp_path / "kd0", epochs=1, teacher=str(teacher),
                     distill_alpha=0.0), quiet=True).fit()
    a, _ = read_weights(tmp_path / "plain" / "model.safetensors")
    b, _ = read_weights(tmp_path / "kd0" / "model.safetensors")
    for k in a:
        assert a[k].equal(b[k]), k


def test_teacher_of_other_classes_or_missing_is_a_one_line_error(tiny_data, tmp_path):
    other = tmp_path / "other"
    make_folder(other, per_class=(24, 6), classes=("x", "y", "z"))
    Trainer(tiny_cfg(other, tmp_path / "t2", epochs=1), quiet=True).fit()
    runner = CliRunner()
    for spec, message in ((tmp_path / "t2" / "model.safetensors", "same classes"),
                          (tmp_path / "nope.safetensors", "weights file not found")):
        res = runner.invoke(app, ["train", "--data", str(tiny_data), "--out",
                                  str(tmp_path / "s"), "--teacher", str(spec), "--epochs", "1",
                                  "--batch-size", "8"])
        assert res.exit_code != 0
        assert message in res.output and "Traceback" not in res.output
        assert not (tmp_path / "s" / "last.pt").exists()


def test_ensemble_teacher_averages_the_members_logits(tiny_data, teacher, tmp_path):
    from resnets.train.distill import load_teacher
    from resnets.weights import load_classifier

    clf = load_classifier(teacher)
    other_run = tmp_path / "t-other"
    cfg = tiny_cfg(tiny_data, other_run, epochs=1, seed=5)
    Trainer(cfg, quiet=True).fit()
    other = other_run / "model.safetensors"
    x = torch.randn(4, 3, 16, 16)
    args = (clf.classes, clf.preprocessing, torch.device("cpu"))
    one = load_teacher(str(teacher), *args, flip=True)
    two = load_teacher(str(other), *args, flip=True)
    both = load_teacher(f"{teacher},{other}", *args, flip=True)
    torch.testing.assert_close(both(x), (one(x) + two(x)) / 2)
    m = one.models[0]
    torch.testing.assert_close(one(x), (m(x) + m(x.flip(-1))) / 2)
    with pytest.raises(ValueError, match="separated by commas"):
        load_teacher(f"{teacher},", *args)
