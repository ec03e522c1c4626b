"""The one loader: any weights source to a classifier with classes and preprocessing, and
the commands that go through it (eval, predict) taking weights people already have."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import resnets
from resnets.cli import app
from resnets.weights import load_classifier
from resnets.weights.classifier import load_model
from resnets.weights.preprocessing import IMAGENET_MEAN, Preprocessing
from resnets.weights.records import CIFAR10_CLASSES, imagenet_classes
from tests.synthetic import make_folder

from .conftest import checkpoint_bytes, hashed_name, record_dict
from .test_loading import akamaster_checkpoint, randomise_bn

runner = CliRunner()


def _photos(folder, n=2, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
        paths.append(path)
    return paths


def test_akamaster_file_evaluates_without_a_convert_step_and_matches_the_converted_one(
        tmp_path):
    akamaster_checkpoint(tmp_path / "aka.th", 20)
    data = make_folder(tmp_path / "data", classes=CIFAR10_CLASSES, per_class=(1, 3), size=32)
    res = runner.invoke(app, ["eval", "--model", "resnet20", "--weights",
                              str(tmp_path / "aka.th"), "--data", str(data), "--json",
                              "--out", str(tmp_path / "ev1")])
    assert res.exit_code == 0, res.output
    direct = json.loads(res.stdout.strip().splitlines()[-1])
    conv = runner.invoke(app, ["weights", "convert", str(tmp_path / "aka.th"),
                               str(tmp_path / "aka.safetensors"), "--model", "resnet20"])
    assert conv.exit_code == 0, conv.output
    res = runner.invoke(app, ["eval", "--weights", str(tmp_path / "aka.safetensors"),
                              "--data", str(data), "--json", "--out", str(tmp_path / "ev2")])
    assert res.exit_code == 0, res.output
    converted = json.loads(res.stdout.strip().splitlines()[-1])
    assert direct["n"] == converted["n"] == 30
    assert direct["top1"] == converted["top1"] and direct["top5"] == converted["top5"]
    assert direct["per_class"] == converted["per_class"]


def test_akamaster_file_gets_their_preprocessing_with_a_note(tmp_path):
    akamaster_checkpoint(tmp_path / "aka.th", 20)
    clf = load_classifier(tmp_path / "aka.th")  # architecture guessed from the tensors
    assert clf.name == "resnet20"
    assert clf.preprocessing == Preprocessing(resize=32, crop=32)  # ImageNet statistics
    assert clf.preprocessing.mean == IMAGENET_MEAN
    assert clf.classes == [str(i) for i in range(10)]
    assert any("akamaster" in n for n in clf.notes)
    assert any("class indices" in n for n in clf.notes)


@pytest.mark.parametrize("wrap", ["bare", "dataparallel"])
def test_predict_takes_torchvision_and_wrapped_checkpoints(tmp_path, wrap):
    from torchvision.models import resnet18

    tv = randomise_bn(resnet18()).eval()
    state = tv.state_dict()
    if wrap == "dataparallel":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}
    weights = tmp_path / "mine.pth"
    torch.save(state, weights)
    a, b = _photos(tmp_path / "photos")
    res = runner.invoke(app, ["predict", str(a), str(b), "--model", "resnet18", "--weights",
                              str(weights), "--json", "--top-k", "3"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(a), str(b)]
    names = set(imagenet_classes())
    assert all(len(r["top"]) == 3 and r["top"][0]["class"] in names for r in rows)
    assert "assuming ImageNet-1k's 1000 classes" in res.stderr
    # the same image through torchvision itself ranks the same class first
    clf = load_classifier(weights, "resnet18")
    with torch.no_grad():
        ours = clf.logits(torch.from_numpy(np.array(Image.open(a))).permute(2, 0, 1)[None])
    assert rows[0]["top"][0]["class"] == imagenet_classes()[ours.argmax().item()]


def test_weight_tag_served_from_localhost_gives_imagenet_class_names(
        tmp_path, server, cache, extra_records):
    from torchvision.models import resnet18

    payload = checkpoint_bytes(randomise_bn(resnet18()).state_dict())
    name = hashed_name("resnet18", payload)
    url = server.add(name, payload)
    rec = record_dict("resnet18", "resnet18.local_in1k", url,
                      hashlib.sha256(payload).hexdigest(), dataset="imagenet-1k")
    rec["preprocessing"] = {"resize": 256, "crop": 224, "mean": list(IMAGENET_MEAN),
                            "std": [0.229, 0.224, 0.225]}
    extra_records([rec])
    (photo,) = _photos(tmp_path / "p", n=1, size=(300, 260))
    res = runner.invoke(app, ["predict", str(photo), "--weights", "resnet18.local_in1k",
                              "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["path"] == str(photo)
    assert {t["class"] for t in row["top"]} <= set(imagenet_classes())
    assert server.requests == [name] and (cache / name).is_file()
    assert "note:" not in res.stderr  # the record says everything


def test_bundled_model_name_is_a_source():
    clf = load_classifier("resnet20")
    assert clf.name == "resnet20" and clf.classes == list(CIFAR10_CLASSES)
    assert clf.source == "resnet20.resnets_cifar10" and clf.notes == []
    default = load_classifier()  # nothing given: the best bundled classifier
    assert default.name == "resnet56"


def test_metadata_class_list_must_match_the_head(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(resnets.create_model("resnet20", num_classes=3).state_dict(), str(path),
              metadata={"model": '"resnet20"', "classes": '["a", "b"]'})
    with pytest.raises(ValueError, match="its metadata lists 2 class names but its head "
                                         "has 3 outputs"):
        load_classifier(path)


def test_weights_for_another_architecture_name_the_likely_one(tmp_path):
    path = tmp_path / "r20.safetensors"
    save_file(resnets.create_model("resnet20").state_dict(), str(path))
    with pytest.raises(ValueError) as info:
        load_model("resnet56", path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("weights r20.safetensors do not fit resnet56: missing 180 keys")
    assert message.endswith("(the weights look like resnet20 or plain20)")  # twins


def test_a_raw_state_dict_that_fits_a_plain_net_and_its_resnet_twin_is_not_guessed(tmp_path):
    """plain20 has resnet20's parameter names and shapes (option A shortcuts hold none): a
    file that says nothing was loaded as resnet20 whichever it was."""
    path = tmp_path / "w.safetensors"
    save_file(resnets.create_model("plain20").state_dict(), str(path))
    with pytest.raises(ValueError, match="fit resnet20 and plain20 alike .*give the model "
                                         "name"):
        load_classifier(path)
    assert load_classifier(path, model="plain20").name == "plain20"
    r50 = tmp_path / "r50.safetensors"  # an ImageNet net has no plain twin of its shapes
    save_file(resnets.create_model("resnet50").state_dict(), str(r50))
    assert load_classifier(r50).name == "resnet50"


def test_wrapper_prefixes_are_stripped_and_class_count_taken_from_the_file(tmp_path):
    model = resnets.create_model("resnet20", num_classes=7)
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    del state["module._orig_mod.bn1.num_batches_tracked"]  # older checkpoints lack these
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = load_model("resnet20", tmp_path / "ckpt.pth")
    assert loaded.num_classes == 7 and not loaded.training
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_nonfinite_weights_are_refused_unless_asked(tmp_path):
    state = resnets.create_model("resnet20").state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path), metadata={"model": "resnet20"})
    with pytest.raises(ValueError, match="hold NaN or infinite values in 1 tensors "
                                         r"\(e.g. layer1.0.conv1.weight\)"):
        load_classifier(path)
    clf = load_classifier(path, allow_nonfinite=True)
    assert torch.isnan(clf.model.layer1[0].conv1.weight).any()


def test_metadata_preprocessing_must_normalise_the_models_channels(tmp_path):
    """Statistics for 2 channels on an RGB network: refused when loading, in one line, not a
    shape error from the first batch."""
    path = tmp_path / "w.safetensors"
    save_file(resnets.create_model("resnet20").state_dict(), str(path),
              metadata={"model": "resnet20",
                        "preprocess": '{"mean": [0.5, 0.5], "std": [0.2, 0.2], "size": 32}'})
    with pytest.raises(ValueError, match="w.safetensors: invalid preprocess metadata: mean and "
                                         "std for 2 channels, but resnet20 takes 3"):
        load_classifier(path)


def test_a_model_name_as_weights_for_another_model_is_refused_not_ignored():
    """``--model resnet20 --weights resnet56`` names resnet56's weights: refused as their
    tag is, not silently replaced by resnet20's own weights."""
    with pytest.raises(ValueError, match="weights resnet56.resnets_cifar10 are for resnet56, "
                                         "not resnet20"):
        load_classifier("resnet56", "resnet20")
    with pytest.raises(ValueError, match="weights resnet56.resnets_cifar10 are for resnet56, "
                                         "not resnet20"):
        load_classifier("resnet56.resnets_cifar10", "resnet20")
    same = load_classifier("resnet20", "resnet20")
    assert same.name == "resnet20" and same.source == "resnet20.resnets_cifar10"


def test_messages_name_the_real_problem(tmp_path):
    """Super-resolution weights given as a classifier, an unknown model name, and a file
    that is no pickle at all each get the error that says what they are."""
    from resnets.weights.sr import BUNDLED_SR_DIR

    sr = next(BUNDLED_SR_DIR.glob("*.safetensors"))
    with pytest.raises(ValueError, match="holds super-resolution weights, not a classifier: "
                                         "run them with `resnets upscale`"):
        load_classifier(sr)
    with pytest.raises(ValueError, match=r"unknown model 'resnet999'.*`resnets info` lists"):
        load_classifier(None, "resnet999")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("garbage\n")
    with pytest.raises(ValueError, match="damaged or not a torch checkpoint") as info:
        load_classifier(garbage, "resnet20")
    assert "weights_only" not in str(info.value) and "Python objects" not in str(info.value)
