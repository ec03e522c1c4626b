import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from resnets.cli import app
from resnets.tasks.embed import embed, embed_with, write_embeddings
from resnets.weights import load_classifier

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture(scope="module")
def clf():
    return load_classifier("resnet20")


def test_embeddings_are_the_pooled_features_in_file_order(clf):
    paths = sorted(EXAMPLES.glob("*.jpg"))
    result = embed_with(clf, paths, batch_size=4, backend="torch")
    assert result.features.shape == (10, 64) and result.features.dtype == np.float32
    assert result.paths == [str(p) for p in paths] and not result.errors
    from resnets.data.io import read_rgb

    x = clf.preprocessing(read_rgb(paths[3]))[None]
    with torch.no_grad():
        expected = clf.model.forward_head(clf.model.forward_features(x), pre_logits=True)
        logits = clf.model.fc(torch.from_numpy(result.features[3:4]))
    np.testing.assert_allclose(result.features[3], expected[0].numpy(), atol=1e-5)
    torch.testing.assert_close(logits, clf.model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["optimized", "onnxruntime", "openvino"])
def test_other_backends_give_the_same_embeddings(clf, backend, tmp_path, monkeypatch):
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(backend,
                                                                                   "torch"))
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    paths = sorted(EXAMPLES.glob("*.jpg"))[:4]
    reference = embed_with(clf, paths, backend="torch").features
    result = embed_with(clf, paths, backend=backend)
    assert result.backend == backend
    np.testing.assert_allclose(result.features, reference, atol=1e-4)


def test_bad_files_are_reported_and_the_others_embedded(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    good = sorted(EXAMPLES.glob("*.jpg"))[:2]
    result = embed([good[0], bad, good[1]], "resnet20", backend="torch")
    assert result.paths == [str(good[0]), str(good[1])] and result.features.shape == (2, 64)
    assert len(result.errors) == 1 and result.errors[0].startswith(str(bad))


def test_write_embeddings_puts_paths_beside_the_array(clf, tmp_path):
    result = embed_with(clf, sorted(EXAMPLES.glob("*.jpg"))[:3], backend="torch")
    array, index = write_embeddings(result, tmp_path / "feats.npy")
    assert index == tmp_path / "feats.json"
    np.testing.assert_array_equal(np.load(array), result.features)
    meta = json.loads(index.read_text())
    assert meta["paths"] == result.paths and meta["dim"] == 64 and meta["model"] == "resnet20"
    with pytest.raises(ValueError, match=r"written as a \.npy file"):
        write_embeddings(result, tmp_path / "feats.csv")


def test_cli_embed_writes_files_prints_json_and_exits_1_on_a_bad_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    good = sorted(EXAMPLES.glob("*.jpg"))[:2]
    out = tmp_path / "e.npy"
    result = runner.invoke(app, ["embed", str(good[0]), str(bad), str(good[1]), "--model",
                                 "resnet20", "--backend", "torch", "-o", str(out), "--json"])
    assert result.exit_code == 1
    assert f"error: {bad}: empty file" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(good[0]), str(good[1])]
    np.testing.assert_allclose(np.load(out), [r["embedding"] for r in rows], atol=1e-6)


def test_cli_embed_needs_an_output_or_json():
    result = runner.invoke(app, ["embed", str(EXAMPLES)])
    assert result.exit_code == 1 and "--output FILE.npy, or --json" in result.output


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux",
                    reason="the prefetch child is forked (Linux only)")
def test_files_a_child_decoded_ahead_give_the_same_embeddings(clf, monkeypatch):
    from resnets.data import prefetch

    monkeypatch.setattr(prefetch, "can_fork", lambda: True)  # threads of earlier tests
    paths = sorted(EXAMPLES.glob("*.jpg"))
    reference = embed_with(clf, paths, batch_size=4, backend="torch")
    with prefetch.Prefetch(paths, min_files=1) as prefetched:
        assert prefetched.pid is not None
        result = embed_with(clf, paths, batch_size=4, backend="torch", prefetched=prefetched)
    assert result.paths == reference.paths
    np.testing.assert_array_equal(result.features, reference.features)


def test_the_cli_embeds_in_its_own_process_as_the_library_does(clf, tmp_path):
    """``resnets embed`` as a user runs it (a new process, where the prefetch child forks
    before PyTorch loads): the same features as :func:`embed_with`."""
    out = tmp_path / "f.npy"
    done = subprocess.run([sys.executable, "-m", "resnets", "embed", str(EXAMPLES), "--model",
                           "resnet20", "--backend", "torch", "--output", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    reference = embed_with(clf, sorted(EXAMPLES.glob("*.jpg")), backend="torch")
    np.testing.assert_allclose(np.load(out), reference.features, atol=1e-5)
    assert json.loads(out.with_suffix(".json").read_text())["paths"] == reference.paths


def test_a_run_that_embeds_nothing_leaves_an_existing_output_alone(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    out = tmp_path / "e.npy"
    out.write_bytes(b"earlier results")
    result = runner.invoke(app, ["embed", str(bad), "--model", "resnet20", "--backend",
                                 "torch", "-o", str(out)])
    assert result.exit_code == 1 and f"no embeddings: {out} not written" in result.stderr
    assert out.read_bytes() == b"earlier results" and not out.with_suffix(".json").exists()


def test_an_unwritable_output_is_reported_by_the_name_given(clf, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = embed_with(clf, sorted(EXAMPLES.glob("*.jpg"))[:1], backend="torch")
    with pytest.raises(OSError) as info:
        write_embeddings(result, blocked / "e.npy")
    assert "e.npy" in str(info.value) and "e.json" not in str(info.value)
