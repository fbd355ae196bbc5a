"""The embedded digits and step-indexed sampling."""

import hashlib
import logging
from importlib import resources

import pytest
import torch

from img2img.data import mnist
from img2img.data.batches import StepSampler
from img2img.errors import UserError


def test_embedded_digits_are_the_4000_1000_split_with_100_held_out_per_class():
    train, test = mnist.load_embedded("train"), mnist.load_embedded("test")
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    flat_train = {bytes(image.numpy().tobytes()) for image in train.images}
    assert not any(bytes(image.numpy().tobytes()) in flat_train for image in test.images)
    scaled = train.as_float()
    assert scaled.min() == -1 and scaled.max() == 1


def test_embedded_file_matches_its_recorded_hash():
    data = resources.files("img2img.data").joinpath("assets", mnist.EMBEDDED_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == mnist.EMBEDDED_SHA256


def test_failed_download_falls_back_to_embedded_digits_with_one_warning(tmp_path, monkeypatch, caplog):
    def offline(root, split, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error no network>")

    monkeypatch.setattr(mnist, "load_torchvision_mnist", offline)
    with caplog.at_level(logging.WARNING, logger="img2img"):
        digits = mnist.load_digits(str(tmp_path / "mnist"))
    assert "embedded" in digits.source and len(digits.labels) == 4000
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not be downloaded" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_mnist_root_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="--mnist-root"):
        mnist.load_digits(str(blocker))


def test_sampler_is_a_pure_function_of_the_step():
    a, b = StepSampler(100, 8, seed=1), StepSampler(100, 8, seed=1)
    steps = [0, 5, 13, 2, 40]
    assert all(torch.equal(a.indices(s), b.indices(s)) for s in steps)
    assert a.keys(3) == b.keys(3)
    assert not torch.equal(a.indices(0), StepSampler(100, 8, seed=2).indices(0))


def test_an_epoch_visits_each_example_at_most_once_and_epochs_differ():
    sampler = StepSampler(20, 4, seed=0)
    epoch0 = torch.cat([sampler.indices(s) for s in range(5)])
    assert sorted(epoch0.tolist()) == list(range(20))
    assert not torch.equal(epoch0, torch.cat([sampler.indices(s) for s in range(5, 10)]))


def test_ranks_draw_disjoint_shards_of_the_global_batch():
    ranks = [StepSampler(64, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    for step in range(8):
        first, second = (set(s.indices(step).tolist()) for s in ranks)
        assert len(first) == 4 and not first & second


def test_dataset_smaller_than_a_batch_is_refused():
    with pytest.raises(UserError, match="--batch-size"):
        StepSampler(3, 4, seed=0)
