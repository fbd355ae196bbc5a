"""DCGAN: the all-convolutional networks at every image side they take, the paper's initialisation, and the
MNIST GAN's commands (train, sample, eval) working for it unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from img2img.models.dcgan import Dcgan, DcganConfig
from img2img.nn.dcgan import DCGANDiscriminator, DCGANGenerator

from test_cli import invoke


@pytest.mark.parametrize("size", [28, 32, 64])
def test_networks_map_noise_to_images_and_images_to_one_logit(size):
    g, d = DCGANGenerator(100, 3, size, base_channels=8), DCGANDiscriminator(3, size, base_channels=8)
    images = g(torch.randn(4, 100))
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    assert d(images).shape == (4, 1)
    for net in (g, d):  # all-convolutional: no pooling, no fully connected hidden layers
        kinds = {type(m) for m in net.modules()}
        assert nn.Linear not in kinds and not any(issubclass(k, nn.modules.pooling._MaxPoolNd) for k in kinds)
    # batch norm everywhere but D's input layer and G's output layer, as the paper prescribes
    assert not isinstance(d.main[1], nn.BatchNorm2d) and isinstance(g.main[-1], nn.Tanh)
    with pytest.raises(ValueError, match="28, 32, 64"):
        DCGANGenerator(100, 1, 48)


def test_the_model_uses_the_papers_initialisation_and_settings():
    model = Dcgan(DcganConfig())
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.001
    assert Dcgan.train_defaults["batch_size"] == 128 and Dcgan.train_defaults["ema_decay"] == 0.0
    from img2img.config import TrainConfig  # noqa: PLC0415

    assert (TrainConfig().lr, TrainConfig().beta1) == (2e-4, 0.5)


def test_train_sample_and_eval_work_as_for_the_mnist_gan(tmp_path):
    result, output = invoke("train", "dcgan", "--out", tmp_path / "run", "--steps", 3, "--batch-size", 8,
                            "--ngf", 8, "--ndf", 8, "--device", "cpu")
    assert result.exit_code == 0, output
    result, output = invoke("sample", tmp_path / "run", "--n", 5, "--out", tmp_path / "digits", "--device", "cpu")
    assert result.exit_code == 0, output
    assert len(list((tmp_path / "digits").glob("*.png"))) == 5
    result, output = invoke("eval", tmp_path / "run", "--samples", 50, "--device", "cpu")
    assert result.exit_code == 0 and "fid" in output, output
