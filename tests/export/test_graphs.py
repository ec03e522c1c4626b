import torch

from resnets.export.graphs import PooledFeatures, Uint8Input
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
