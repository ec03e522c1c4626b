import torch

from resnets.export.graphs import AtScale, PooledFeatures, Uint8Input
from resnets.models.sr import create_sr_model
from resnets.weights.preprocessing import cifar_default


def test_uint8_input_matches_the_model_on_the_normalised_batch(resnet20):
    pre = cifar_default()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        fused = Uint8Input(resnet20, pre.mean, pre.std)(images)
        reference = resnet20(pre.normalize(images))
    assert Uint8Input.input_dtype == torch.uint8
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)


def test_pooled_features_are_what_fc_takes(resnet20):
    x = torch.randn(2, 3, 32, 32)
    features = PooledFeatures(resnet20)
    with torch.no_grad():
        out = features(x)
        assert out.shape == (2, resnet20.num_features) == (2, 64)
        torch.testing.assert_close(resnet20.fc(out), resnet20(x))


def test_at_scale_runs_the_upsampler_of_its_scale():
    model = create_sr_model("edsr_tiny", scales=(2, 3)).eval()
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        for scale in (2, 3):
            graph = AtScale(model, scale)
            torch.testing.assert_close(graph(x), model(x, scale), rtol=0, atol=0)
            assert f"scale={scale}" in repr(graph)  # the OpenVINO cache keys on it
        assert AtScale(model, 3)(x).shape == (1, 3, 30, 36)
