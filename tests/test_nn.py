import torch

from img2img.nn import MLPDiscriminator, MLPGenerator, init_weights


def test_generator_shape_range_and_architecture():
    g = init_weights(MLPGenerator())
    images = g(torch.randn(5, 100))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    widths = [m.out_features for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 512, 1024, 784]
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [m.momentum for m in norms] == [0.2, 0.2, 0.2]  # Keras momentum 0.8


def test_discriminator_shape_and_probability():
    d = init_weights(MLPDiscriminator())
    images = torch.rand(7, 1, 28, 28) * 2 - 1
    assert d(images).shape == (7, 1)
    probability = d.probability(images)
    assert ((probability > 0) & (probability < 1)).all()
    widths = [m.out_features for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256, 1]


def test_init_draws_weights_from_normal_0_002():
    g = init_weights(MLPGenerator())
    weight = g.layers[-2].weight
    assert abs(weight.mean().item()) < 2e-3
    assert abs(weight.std().item() - 0.02) < 1e-3
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, torch.nn.Linear))
