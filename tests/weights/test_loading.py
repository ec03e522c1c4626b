import hashlib
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import resnets
from resnets.weights import get_transforms, load_checkpoint
from resnets.weights.loading import convert
from resnets.weights.records import CIFAR10_CLASSES

from .conftest import checkpoint_bytes, hashed_name, record_dict
from .test_state_dict_io import save_as_if_from_cuda


def randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so eval-mode outputs depend on every buffer."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def resnet20_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return randomise_bn(resnets.create_model("resnet20")).state_dict()


def same_weights(model: nn.Module, state: dict[str, torch.Tensor], skip: str = "#") -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(skip))


# --- an independent CIFAR ResNet in akamaster/pytorch_resnet_cifar10's layout ------------------
# Written here from the paper and their checkpoint keys, sharing no code with resnets: head
# named ``linear``, option A shortcut (subsample by 2, zero-pad planes // 4 channels on both
# sides, no parameters), ``shortcut`` an empty Sequential where shapes match.

class PadShortcut(nn.Module):
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.planes = planes

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4))


class PeerBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = PadShortcut(planes) if stride != 1 or cin != planes else nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PeerCifarResNet(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layer = []
            for i in range(n):
                layer.append(PeerBlock(cin, planes, stride if i == 0 else 1))
                cin = planes
            blocks.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = blocks
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def akamaster_checkpoint(path, depth: int) -> nn.Module:
    """Their file format: ``{"best_prec1", "state_dict"}`` of a DataParallel model, with the
    storages on CUDA, in the pre-1.6 (non-zip) torch format."""
    torch.manual_seed(depth)
    peer = randomise_bn(PeerCifarResNet((depth - 2) // 6)).eval()
    state = nn.DataParallel(peer).state_dict()
    assert "module.linear.weight" in state and "module.layer2.0.bn2.num_batches_tracked" in state
    save_as_if_from_cuda({"best_prec1": 91.73, "state_dict": state}, path, legacy=True)
    return peer


@pytest.mark.parametrize("depth", [20, 32])
def test_akamaster_checkpoint_gives_their_outputs(tmp_path, depth):
    path = tmp_path / f"resnet{depth}.th"
    peer = akamaster_checkpoint(path, depth)
    model = resnets.create_model(f"resnet{depth}", pretrained=str(path)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), peer(x), atol=1e-5, rtol=1e-5)
    record = model.pretrained_record
    assert record.tag == f"resnet{depth}.akamaster_cifar10"
    pre = record.preprocessing
    assert (pre.resize, pre.crop) == (None, None)
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert record.classes[0] == "airplane" and record.num_classes == 10


def test_pretrained_model_still_pickles_and_scripts(tmp_path):
    import pickle
    import warnings

    path = tmp_path / "resnet20.th"
    akamaster_checkpoint(path, 20)
    model = resnets.create_model("resnet20", pretrained=path).eval()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.pretrained_record == model.pretrained_record
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still offered
        scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))


def test_akamaster_checkpoint_preprocessing_matches_their_pipeline(tmp_path):
    path = tmp_path / "resnet20.th"
    akamaster_checkpoint(path, 20)
    model = resnets.create_model("resnet20", pretrained=path)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
    theirs = torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)
    theirs = (theirs - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(get_transforms(model)(img), theirs, atol=1e-6)


def test_torchvision_checkpoint_loads_as_it_is(tmp_path):
    from torchvision.models import resnet18

    tv = randomise_bn(resnet18()).eval()
    path = tmp_path / "resnet18-f37072fd.pth"  # the published file's name
    torch.save(tv.state_dict(), path)
    model = resnets.create_model("resnet18", pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))
    # named as the published file but not it (sha256 f37072fd...): not given its record
    assert model.pretrained_record is None


def test_pretrained_true_downloads_the_default_record(server, cache, extra_records,
                                                      resnet20_state):
    payload = checkpoint_bytes({"state_dict": resnet20_state})
    name = hashed_name("resnet20", payload)
    url = server.add(name, payload)
    extra_records([record_dict("resnet20", "resnet20.test_cifar10", url,
                               hashlib.sha256(payload).hexdigest(), default=True)])
    model = resnets.create_model("resnet20", pretrained=True)
    assert same_weights(model, resnet20_state)
    assert (cache / name).is_file() and server.requests == [name]
    assert model.pretrained_record.tag == "resnet20.test_cifar10"
    assert get_transforms(model).transforms[-1].mean == [0.5, 0.5, 0.5]
    # a tag, short or full, loads the same weights from the cache
    for tag in ("test_cifar10", "resnet20.test_cifar10"):
        assert same_weights(resnets.create_model("resnet20", pretrained=tag), resnet20_state)
    assert len(server.requests) == 1


def test_pretrained_url_is_downloaded_and_hash_checked(server, cache, resnet20_state):
    payload = checkpoint_bytes(resnet20_state)
    url = server.add(hashed_name("resnet20", payload), payload)
    assert same_weights(resnets.create_model("resnet20", pretrained=url), resnet20_state)
    bad = server.add("resnet20-00000000.pth", payload)
    with pytest.raises(ConnectionError, match="sha256"):
        resnets.create_model("resnet20", pretrained=bad)


def test_offline_pretrained_without_cache_fails_with_placement(server, cache, extra_records,
                                                               monkeypatch, resnet20_state):
    payload = checkpoint_bytes(resnet20_state)
    name = hashed_name("resnet20", payload)
    extra_records([record_dict("resnet20", "resnet20.test_cifar10", server.add(name, payload),
                               hashlib.sha256(payload).hexdigest(), default=True)])
    monkeypatch.setenv("RESNETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=f"place the file at {cache / name}"):
        resnets.create_model("resnet20", pretrained=True)
    assert server.requests == []


def test_other_num_classes_loads_backbone_and_reinitialises_head(tmp_path, resnet20_state,
                                                                  caplog):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    with caplog.at_level(logging.WARNING, logger="resnets.weights"):
        model = resnets.create_model("resnet20", pretrained=path, num_classes=4)
    assert model.fc.weight.shape == (4, 64)
    assert same_weights(model, resnet20_state, skip="fc.")
    assert "10 classes" in caplog.text and "re-initialised fc" in caplog.text


def test_unfit_head_of_an_existing_model_is_reinitialised(resnet20_state):
    from resnets.weights import load_state_dict_into

    model = resnets.create_model("resnet20", num_classes=4)
    with torch.no_grad():
        model.fc.weight.fill_(7.0)
    load_state_dict_into(model, resnet20_state)
    assert model.fc.weight.shape == (4, 64) and not (model.fc.weight == 7.0).any()
    assert same_weights(model, resnet20_state, skip="fc.")


@pytest.mark.parametrize("kwargs", [{"num_classes": 0},
                                    {"features_only": True, "out_indices": (1, 2, 3)}])
def test_headless_models_load_the_backbone(tmp_path, resnet20_state, kwargs):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    model = resnets.create_model("resnet20", pretrained=path, **kwargs)
    assert same_weights(model, resnet20_state, skip="fc.")


def test_one_input_channel_sums_the_rgb_filters(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    rgb = resnets.create_model("resnet20", pretrained=path).eval()
    grey = resnets.create_model("resnet20", pretrained=path, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # a grey image gives what its RGB copy gives
        assert torch.allclose(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5)


def test_more_input_channels_repeat_and_scale_the_filters(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save(resnet20_state, path)
    rgb = resnets.create_model("resnet20", pretrained=path).eval()
    six = resnets.create_model("resnet20", pretrained=path, in_chans=6).eval()
    w = resnet20_state["conv1.weight"]
    assert torch.allclose(six.conv1.weight, torch.cat([w, w], 1) * 0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(six(torch.cat([x, x], 1)), rgb(x), atol=1e-5)


def test_key_mismatch_lists_missing_and_unexpected_grouped(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save({**resnet20_state, "aux.head.weight": torch.ones(1)}, path)
    with pytest.raises(ValueError) as info:
        resnets.create_model("resnet32", pretrained=path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("weights w.pth do not fit resnet32")
    # resnet32 has 5 blocks a stage, resnet20 3: two more blocks of 10 tensors in each
    assert "missing 60 keys: layer1 (20: layer1.3.conv1.weight, layer1.3.bn1.weight, ...)" in msg
    assert "layer2 (20: layer2.3." in msg and "layer3 (20: layer3.3." in msg
    assert "unexpected 1 keys: aux (1: aux.head.weight)" in msg


def test_shape_mismatch_names_the_tensors(tmp_path, resnet20_state):
    path = tmp_path / "w.pth"
    torch.save({**resnet20_state, "layer1.0.conv1.weight": torch.ones(16, 16, 1, 1)}, path)
    with pytest.raises(ValueError, match=r"1 tensors differ in shape \(weights vs model\): "
                                         r"layer1.0.conv1.weight \[16, 16, 1, 1\] vs "
                                         r"\[16, 16, 3, 3\]"):
        resnets.create_model("resnet20", pretrained=path)


def test_failed_load_leaves_model_untouched(tmp_path, resnet20_state):
    from resnets.weights import load_state_dict_into

    model = resnets.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    broken = {k: v for k, v in resnet20_state.items() if not k.startswith("layer3")}
    with pytest.raises(ValueError):
        load_state_dict_into(model, broken)
    assert same_weights(model, before)


def test_a_refused_load_with_an_unfit_head_leaves_the_head_as_it_was(resnet20_state):
    """The unfit head was re-initialised before the rest of the load was checked: a load
    then refused had already replaced the model's head."""
    from resnets.weights import load_state_dict_into

    model = resnets.create_model("resnet20", num_classes=4)
    head = model.fc
    nn.init.constant_(head.weight, 7.0)
    broken = {k: v for k, v in resnet20_state.items() if not k.startswith("layer3")}
    with pytest.raises(ValueError):
        load_state_dict_into(model, broken)  # 10 classes vs 4, and no layer3
    assert model.fc is head and bool((model.fc.weight == 7.0).all())


def test_a_fresh_head_keeps_the_models_dtype(resnet20_state):
    """The replaced head was a float32 CPU Linear whatever the model was: a float64 model
    then failed in its forward pass."""
    from resnets.weights import load_state_dict_into

    model = resnets.create_model("resnet20", num_classes=5).to(torch.float64)
    load_state_dict_into(model, resnet20_state)  # 10 classes: the head is re-initialised
    assert model.fc.weight.dtype == torch.float64 and model.fc.out_features == 5
    assert model(torch.rand(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 5)


def test_wrong_model_tag_and_unknown_sources_are_clear(tmp_path):
    with pytest.raises(ValueError, match="are for resnet50, not resnet18; resnet18 has: "
                                         "resnet18.tv_in1k"):
        resnets.create_model("resnet18", pretrained="resnet50.tv_in1k")
    with pytest.raises(ValueError, match="unknown weights 'tv3_in1k'.*resnet18.tv_in1k"):
        resnets.create_model("resnet18", pretrained="tv3_in1k")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resnets.create_model("resnet18", pretrained=str(tmp_path / "none.pth"))
    with pytest.raises(ValueError, match="no pretrained weights are known for 'plain20'"):
        resnets.create_model("plain20", pretrained=True)


def test_a_folder_as_weights_is_named_as_a_folder(tmp_path):
    # a folder that exists was "weights file not found"; a run folder is pointed to its file
    from resnets.weights.sr import load_sr_weights

    run = tmp_path / "run"
    run.mkdir()
    for load in (lambda: resnets.create_model("resnet20", pretrained=str(run)),
                 lambda: resnets.create_model("resnet20", pretrained=run),
                 lambda: load_checkpoint(run), lambda: load_sr_weights(run)):
        with pytest.raises(IsADirectoryError, match=f"{run} is a folder, not a weights file: "
                                                    "expected a .safetensors"):
            load()
    (run / "model.safetensors").write_bytes(b"")
    with pytest.raises(IsADirectoryError, match="did you mean .*run/model.safetensors"):
        resnets.create_model("resnet20", pretrained=str(run))


def test_bundled_weights_are_hash_checked(extra_records, resnet20_state):
    folder = extra_records([])
    save_file(resnet20_state, str(folder / "resnet20-test.safetensors"))
    digest = hashlib.sha256((folder / "resnet20-test.safetensors").read_bytes()).hexdigest()
    extra_records([record_dict("resnet20", "resnet20.bundled_cifar10",
                               "bundled:resnet20-test.safetensors", digest, default=True)])
    assert same_weights(resnets.create_model("resnet20", pretrained=True), resnet20_state)
    (folder / "resnet20-test.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match="bundled weights .* are damaged"):
        resnets.create_model("resnet20", pretrained=True)


def test_a_trained_run_becomes_a_bundled_default(extra_records, resnet20_state):
    from resnets.weights.records import add_bundled_records, bundled_record

    folder = extra_records([])
    path = folder / "resnet20_cifar10.safetensors"
    save_file(resnet20_state, str(path), metadata={  # as `resnets train` writes it
        "model": "resnet20", "classes": json.dumps(list(CIFAR10_CLASSES)),
        "preprocess": '{"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "size": 32, '
                      '"resize": 32}'})
    record = bundled_record(path, tag="resnet20.resnets_cifar10", top1=92.0,
                            accuracy_source="test")
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.file_size == path.stat().st_size and record.class_names == ()
    add_bundled_records(record, folder=folder)
    add_bundled_records(record, folder=folder)  # replacing by tag, not duplicating
    assert len(json.loads((folder / "records.json").read_text())) == 1
    model = resnets.create_model("resnet20", pretrained=True)
    assert model.pretrained_record == record and same_weights(model, resnet20_state)
    assert get_transforms("resnet20").transforms[-1].mean == [0.49, 0.48, 0.45]


def test_trained_run_weights_carry_their_preprocessing(tmp_path, resnet20_state):
    # the metadata resnets' trainer writes beside model.safetensors
    path = tmp_path / "model.safetensors"
    classes = [f"c{i}" for i in range(10)]
    save_file(resnet20_state, str(path), metadata={
        "model": '"resnet20"', "classes": str(classes).replace("'", '"'),
        "preprocess": '{"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "size": 32, '
                      '"resize": 36}'})
    model = resnets.create_model("resnet20", pretrained=path)
    record = model.pretrained_record
    assert record.classes == tuple(classes)
    assert (record.preprocessing.resize, record.preprocessing.crop) == (36, 32)
    assert record.preprocessing.mean == (0.5, 0.4, 0.3)


@pytest.mark.parametrize("tag", ["resnet50.tv_in1k", "resnet50.tv2_in1k"])
def test_transforms_match_torchvision_presets(tag):
    from torchvision.models import ResNet50_Weights

    enum = ResNet50_Weights.IMAGENET1K_V1 if tag.endswith("tv_in1k") else \
        ResNet50_Weights.IMAGENET1K_V2
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), np.uint8))
    ours = get_transforms(tag)(img)
    assert ours.shape == (3, 224, 224)
    assert torch.allclose(ours, enum.transforms()(img), atol=1e-5)
    assert torch.equal(get_transforms(tag)(img), resnets.get_transforms(tag)(img))


def test_transforms_of_a_model_name_are_its_defaults():
    assert get_transforms("resnet50").transforms[0].size == [232]
    assert get_transforms("resnet18").transforms[0].size == [256]


def test_transforms_of_a_model_without_weights_is_an_error():
    with pytest.raises(ValueError, match="carries no weight record.*pass a tag"):
        get_transforms(resnets.create_model("resnet20"))


def test_convert_writes_clean_safetensors_with_metadata(tmp_path):
    src = tmp_path / "resnet20.th"
    peer = akamaster_checkpoint(src, 20)
    out = convert(str(src), tmp_path / "out" / "resnet20.safetensors", model_name="resnet20")
    assert sorted(p.name for p in out.parent.iterdir()) == ["resnet20.safetensors"]
    ckpt = load_checkpoint(out)
    assert "fc.weight" in ckpt.state_dict and not any("module." in k for k in ckpt.state_dict)
    meta = ckpt.metadata
    assert meta["tag"] == "resnet20.akamaster_cifar10" and meta["model"] == "resnet20"
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["best_prec1"] == 91.73 and meta["converted_by"].startswith("resnets ")
    # classes and preprocessing as `resnets train` writes them, for `resnets eval`/`predict`
    assert meta["classes"][:2] == ["airplane", "automobile"] and len(meta["classes"]) == 10
    assert meta["preprocess"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                  "size": 32, "resize": 32, "interpolation": "bilinear"}
    model = resnets.create_model("resnet20", pretrained=out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), peer(x), atol=1e-5)
    assert model.pretrained_record.tag == "resnet20.akamaster_cifar10"


def test_convert_checks_keys_against_the_model(tmp_path, resnet20_state):
    src = tmp_path / "w.pth"
    torch.save(resnet20_state, src)
    with pytest.raises(ValueError, match="do not fit resnet32: missing"):
        convert(src, tmp_path / "o.safetensors", model_name="resnet32")
    with pytest.raises(ValueError, match="ending in .safetensors"):
        convert(src, tmp_path / "o.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


def test_a_file_of_ones_own_under_a_published_name_gets_no_published_record(tmp_path):
    """A local file named as a published one took that record (its classes, its
    preprocessing, its tag as the source) whatever it held; now only when its size and
    sha256 are the record's."""
    from resnets.weights.classifier import load_classifier
    from resnets.weights.records import all_records

    bundled = all_records()["resnet20.resnets_cifar10"]
    mine = tmp_path / bundled.filename
    save_file(resnets.create_model("resnet20").state_dict(), str(mine),
              metadata={"model": "resnet20"})
    clf = load_classifier(mine)
    assert clf.record is None and clf.classes == [str(i) for i in range(10)]
    from resnets.weights.loading import record_path

    published = tmp_path / "published" / bundled.filename
    published.parent.mkdir()
    published.write_bytes(record_path(bundled).read_bytes())
    assert load_classifier(published).record == bundled
