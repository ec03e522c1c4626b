import pytest

from resnets.train.config import TrainConfig, fast_recipe, paper_recipe, recipe


def test_paper_recipe_is_section_4_2():
    cfg = paper_recipe()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert cfg.schedule == "step" and cfg.milestones == (0.5, 0.75) and cfg.gamma == 0.1


def test_fast_recipe_and_overrides():
    cfg = fast_recipe(epochs=7)
    assert cfg.schedule == "onecycle" and cfg.nesterov and cfg.label_smoothing > 0
    assert cfg.epochs == 7
    assert recipe("paper", lr=0.05).lr == 0.05


def test_unknown_field_and_recipe_are_errors():
    with pytest.raises(ValueError, match="unknown training option.*learning_rate"):
        TrainConfig().replace(learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown recipe 'slow'"):
        recipe("slow")


def test_validate_names_the_bad_value():
    with pytest.raises(ValueError, match="schedule must be step, cosine or onecycle"):
        TrainConfig(schedule="linear").validate()
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        TrainConfig(compile_mode="fast").validate()
    TrainConfig(compile_mode="reduce-overhead").validate()
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        TrainConfig(epochs=0).validate()


def test_round_trip_through_dict():
    cfg = fast_recipe(milestones=(0.3, 0.6))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_finetune_recipe_warms_up_then_decays_with_smoothing_at_a_cpu_batch():
    cfg = recipe("finetune", model="resnet18", pretrained="resnet18.tv_in1k")
    assert cfg.schedule == "cosine" and cfg.warmup_epochs == 1.0
    assert cfg.lr == 0.05 and cfg.backbone_lr_scale == 0.2 and cfg.label_smoothing == 0.1
    assert cfg.batch_size == 32 and cfg.crop_min_area == 0.25


def test_finetune_recipe_from_scratch_runs_at_a_lower_lr_unless_told():
    assert recipe("finetune", model="resnet18").lr == 0.01
    assert recipe("finetune", model="resnet18", lr=0.2).lr == 0.2


def test_pretrained_imagenet_model_defaults_to_finetune():
    from resnets.train.config import default_recipe_name

    assert default_recipe_name("resnet18", "resnet18.tv_in1k") == "finetune"
    assert default_recipe_name("resnet18", None) == "paper"
    assert default_recipe_name("resnet20", "resnet20.akamaster_cifar10") == "paper"


def test_a_config_saved_before_photo_folders_resumes_with_its_images():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "crop_min_area"}
    old["image_size"] = 224  # the old default, which in-memory training ignored
    assert TrainConfig.from_dict(old).image_size is None
    assert TrainConfig.from_dict({**old, "crop_min_area": 0.08}).image_size == 224
