import json
import subprocess
import sys

import pytest

import resnets
from resnets.weights import records
from resnets.weights.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnets.weights.records import (
    WeightRecord,
    all_records,
    default_record,
    get_weights,
    imagenet_classes,
    list_weights,
)

from .conftest import record_dict

# torchvision's enum for each model with ImageNet weights
TV_ENUMS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
            "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights",
            "resnet152": "ResNet152_Weights", "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
            "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
            "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
            "wide_resnet50_2": "Wide_ResNet50_2_Weights",
            "wide_resnet101_2": "Wide_ResNet101_2_Weights"}


def tv_pairs():
    """(our record, torchvision's weights entry) for every torchvision weight set."""
    import torchvision.models as tvm

    for model, enum_name in TV_ENUMS.items():
        for entry in getattr(tvm, enum_name):
            tag = f"{model}.tv{'' if entry.name.endswith('V1') else '2'}_in1k"
            yield tag, entry


def test_table_has_every_torchvision_resnet_weight_set():
    pairs = list(tv_pairs())
    assert len(pairs) == 17  # 5 V1 + 3 V2 ResNets, 3 + 2 ResNeXt, 2 + 2 Wide ResNet
    assert {tag for tag, _ in pairs} <= set(list_weights("*in1k"))
    assert len(list_weights("*in1k")) == 17


@pytest.mark.parametrize("tag,entry", list(tv_pairs()), ids=lambda v: getattr(v, "name", v))
def test_torchvision_records_match_the_installed_enums(tag, entry):
    rec = get_weights(tag)
    assert rec.url == entry.url
    assert entry.url.endswith(f"-{rec.sha256}.pth") and len(rec.sha256) == 8
    metrics = entry.meta["_metrics"]["ImageNet-1K"]
    assert (rec.top1, rec.top5) == (metrics["acc@1"], metrics["acc@5"])
    assert rec.size_mb == entry.meta["_file_size"] and rec.recipe == entry.meta["recipe"]
    preset = entry.transforms()
    assert rec.preprocessing.resize == preset.resize_size[0]
    assert rec.preprocessing.crop == preset.crop_size[0]
    assert rec.preprocessing.interpolation == preset.interpolation.value
    assert list(rec.preprocessing.mean) == preset.mean and list(rec.preprocessing.std) == \
        preset.std
    assert rec.classes == tuple(entry.meta["categories"])


@pytest.mark.parametrize("model", list(TV_ENUMS))
def test_default_is_torchvisions_default(model):
    import torchvision.models as tvm

    default = getattr(tvm, TV_ENUMS[model]).DEFAULT
    assert default_record(model).url == default.url
    assert default_record(model).default


def test_imagenet_classes_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[207] == "golden retriever" and names[-1] == \
        "toilet tissue"


def test_every_record_is_for_a_registered_model_with_at_most_one_default():
    models = set(resnets.list_models())
    defaults: dict[str, int] = {}
    for tag, rec in all_records().items():
        assert rec.model in models and tag.startswith(rec.model + ".")
        defaults[rec.model] = defaults.get(rec.model, 0) + rec.default
        assert rec.license and (rec.top1 is None) == (not rec.accuracy_source)
    assert max(defaults.values()) == 1


def test_akamaster_records_cover_the_cifar_resnets_with_their_preprocessing(extra_records):
    extra_records([])  # no bundled weights: akamaster's are then resnet20's default
    tags = list_weights("*.akamaster_cifar10")
    assert tags == [f"resnet{d}.akamaster_cifar10" for d in (20, 32, 44, 56, 110, 1202)]
    rec = get_weights("resnet56.akamaster_cifar10")
    assert rec.top1 == 93.39 and rec.num_classes == 10  # 6.61% error in their README
    assert rec.preprocessing == Preprocessing(resize=None, crop=None, mean=IMAGENET_MEAN,
                                              std=IMAGENET_STD)
    assert default_record("resnet20").tag == "resnet20.akamaster_cifar10"


def test_model_name_gives_its_default_and_unknown_tags_list_the_models_tags():
    assert get_weights("resnet50").tag == "resnet50.tv2_in1k"
    assert get_weights("resnet18").tag == "resnet18.tv_in1k"
    with pytest.raises(ValueError, match="unknown weights 'resnet50.tv3_in1k'; resnet50 has "
                                         "resnet50.tv_in1k, resnet50.tv2_in1k"):
        get_weights("resnet50.tv3_in1k")


def test_record_round_trips_through_json_dict():
    rec = get_weights("resnet50.tv2_in1k")
    assert WeightRecord.from_dict(rec.to_dict()) == rec
    assert "class_names" not in rec.to_dict()  # the dataset names them


def test_record_validates_tag_and_hash():
    base = record_dict("resnet20", "resnet20.x", "https://h/f.pth", "")
    with pytest.raises(ValueError, match=r"tag must start with the model name .*resnet20\."):
        WeightRecord.from_dict({**base, "tag": "resnet32.x"})
    with pytest.raises(ValueError, match="8 to 64 lowercase hex digits, got 'XYZ'"):
        WeightRecord.from_dict({**base, "sha256": "XYZ"})
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Preprocessing(resize=1, crop=1, interpolation="lanczos")


def test_bundled_records_are_added_from_package_data(extra_records):
    extra_records([record_dict("resnet20", "resnet20.ours_cifar10", "bundled:r20.safetensors",
                               "ab" * 32, default=True, top1=91.0)])
    assert "resnet20.ours_cifar10" in list_weights()
    assert default_record("resnet20").tag == "resnet20.ours_cifar10"
    assert get_weights("resnet20.ours_cifar10").classes[-1] == "truck"


def test_invalid_bundled_records_are_reported(extra_records):
    folder = extra_records([])
    (folder / "records.json").write_text('[{"model": "resnet20"}]')
    records.all_records.cache_clear()
    with pytest.raises(ValueError, match="invalid weight records in .*records.json"):
        all_records()


def test_the_package_ships_the_bundled_records_file():
    assert isinstance(json.loads((records.BUNDLED_DIR / "records.json").read_text()), list)
    assert all(len(r.sha256) == 64 for r in records.bundled_records())  # full hashes


def test_records_do_not_import_torch():
    code = ("import sys; from resnets.weights import list_weights, get_weights; "
            "list_weights(); get_weights('resnet50').classes; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
