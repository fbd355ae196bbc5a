"""CUT and FastCUT: the official settings, PatchNCE's values and gradients, the anti-aliased networks, and the
commands (train, translate, eval, export) with no code outside the model's file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from img2img.config import RunConfig, TrainConfig
from img2img.errors import UserError
from img2img.models.cut import CUT, CutConfig, FastCUT, FastCutConfig
from img2img import speed
from img2img.nn.cut import (BlurDownsample, BlurUpsample, CutResnetGenerator, PatchSampleMLP, patch_nce_loss,
                            replicate_edges)
from img2img.train import Trainer

from test_cli import assert_one_line_error, invoke
from test_unpaired import write_unpaired


def test_defaults_are_the_official_ones():
    cut, fast = CutConfig(), FastCutConfig()
    assert cut.nce_layers == (0, 4, 8, 12, 16) and cut.num_patches == 256 and cut.netf_channels == 256
    assert cut.nce_temperature == 0.07 and cut.loss == "lsgan" and cut.lambda_gan == 1.0
    assert (cut.lambda_nce, cut.nce_idt, cut.flip_equivariance) == (1.0, True, False)
    assert (fast.lambda_nce, fast.nce_idt, fast.flip_equivariance) == (10.0, False, True)
    assert cut.generator == "resnet_9blocks" and cut.base_channels == 64 and cut.n_layers == 3
    assert CUT.epoch_schedule == (400, 200) and FastCUT.epoch_schedule == (200, 50)
    assert not hasattr(CUT, "pool_a")  # no image pool


def test_patch_nce_matches_its_equation():
    torch.manual_seed(0)
    batch, patches, dim, tau = 2, 5, 8, 0.07
    query = F.normalize(torch.randn(batch * patches, dim), dim=1)
    key = F.normalize(torch.randn(batch * patches, dim), dim=1)
    loss = patch_nce_loss(query, key, batch, tau)
    q, k = query.view(batch, patches, dim), key.view(batch, patches, dim)
    expected = []
    for b in range(batch):
        for i in range(patches):
            positive = (q[b, i] @ k[b, i]) / tau
            negatives = [(q[b, i] @ k[b, j]) / tau if j != i else torch.tensor(-10.0 / tau) for j in range(patches)]
            logits = torch.stack([positive, *negatives])
            expected.append(-positive + torch.logsumexp(logits, 0))
    assert torch.allclose(loss, torch.stack(expected), atol=1e-5)
    # a query that equals its key and is orthogonal to the others is picked out: loss near 0
    eye = torch.eye(patches, dim).repeat(batch, 1)
    assert patch_nce_loss(eye, eye, batch, tau).max() < 1e-3
    assert math.isclose(patch_nce_loss(torch.zeros(batch * patches, dim), key, batch, tau).mean().item(),
                        math.log(patches + 1) - 0, rel_tol=0.05, abs_tol=0.5)


def test_patch_nce_gradient_reaches_the_query_side_only():
    query = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    key = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    patch_nce_loss(query, key, 2).mean().backward()
    assert query.grad is not None and query.grad.abs().sum() > 0 and key.grad is None


def test_blur_resampling_shapes_and_constants():
    x = torch.full((1, 2, 9, 10), 0.5)
    assert torch.allclose(BlurDownsample(2)(x), torch.full((1, 2, 5, 5), 0.5))
    assert torch.allclose(BlurUpsample(2)(x), torch.full((1, 2, 18, 20), 0.5), atol=1e-6)


def test_generator_encoder_layers_and_patch_sampler():
    g = CutResnetGenerator(3, 3, 8, 9)
    features = g(torch.randn(2, 3, 32, 32), (0, 4, 8, 12, 16))
    assert [tuple(f.shape[1:]) for f in features] == [(3, 38, 38), (16, 32, 32), (32, 16, 16), (32, 8, 8),
                                                      (32, 8, 8)]
    assert g.layer_channels((0, 4, 8, 12, 16)) == [3, 16, 32, 32, 32]
    sampler = PatchSampleMLP(g.layer_channels((0, 4, 8, 12, 16)), 16)
    samples, locations = sampler(features, 256)
    assert [tuple(s.shape) for s in samples] == [(512, 16), (512, 16), (512, 16), (128, 16), (128, 16)]
    assert all(torch.allclose(s.norm(dim=1), torch.ones(len(s)), atol=1e-5) for s in samples)
    again, _ = sampler(features, 256, locations)  # the same locations give the same patches
    assert all(torch.equal(a, b) for a, b in zip(samples, again))


def tiny_cut(root, folder, model=CUT, steps=40, **changes):
    settings = dict(a=str(root / "a"), b=str(root / "b"), size=32, load_size=32, flip=False, base_channels=8,
                    d_base_channels=8, generator="resnet_6blocks", num_patches=64, netf_channels=16)
    settings.update(changes)
    options = model.resolve(model.Config(**settings))
    run = RunConfig(model.name, TrainConfig(steps=steps, batch_size=2, device="cpu", num_workers=0), options)
    return Trainer(run, folder)


@pytest.mark.parametrize("model", [CUT, FastCUT])
def test_patch_nce_falls_while_training(unpaired_root, tmp_path, model):
    trainer = tiny_cut(unpaired_root, tmp_path, model)
    batches = trainer.data.iterate(0)
    history = []
    for _ in range(40):
        batch = trainer.model.move_batch(next(batches), trainer.device)
        history.append(trainer.train_step(batch)["nce"].item())
    assert np.mean(history[-8:]) < 0.8 * np.mean(history[:8]), history


def test_fastcut_flips_half_of_its_steps_and_both_phases_agree(unpaired_root, tmp_path, monkeypatch):
    trainer = tiny_cut(unpaired_root, tmp_path, FastCUT)
    seen = []
    original = FastCUT._flipped

    def record(self, carry, device):
        flipped = original(self, carry, device)
        seen.append((carry["step"], bool(flipped)))
        return flipped

    monkeypatch.setattr(FastCUT, "_flipped", record)
    batches = trainer.data.iterate(0)
    for _ in range(20):
        trainer.train_step(trainer.model.move_batch(next(batches), trainer.device))
    by_step: dict[int, set] = {}
    for step, flipped in seen:
        by_step.setdefault(step, set()).add(flipped)
    assert all(len(values) == 1 for values in by_step.values())  # D and G phases of a step: one decision
    flips = sum(values.pop() for values in by_step.values())
    assert 3 <= flips <= 17


@pytest.fixture(scope="module")
def colour_digits(tmp_path_factory, demo_task):
    """The CycleGAN demo's data, 40 images a folder, for the tests here that only read it."""
    return demo_task("cyclegan", tmp_path_factory.mktemp("colour-digits") / "demo", 40, 40)


def test_different_channels_are_read_as_the_same_or_refused(colour_digits):
    options = CUT.resolve(CutConfig(a=str(colour_digits / "train/a"), b=str(colour_digits / "train/b"), size=32,
                                    load_size=32))
    assert options.channels_a == options.channels_b == 3 and options.nce_idt
    with pytest.raises(UserError, match="--channels-a"):
        CUT.resolve(CutConfig(a=str(colour_digits / "train/a"), b=str(colour_digits / "train/b"), size=32,
                              load_size=32, channels_a=1, channels_b=3))


@pytest.fixture
def unpaired_root(tmp_path):
    (tmp_path / "data").mkdir()
    return write_unpaired(tmp_path / "data")


@pytest.mark.parametrize("name", ["cut", "fastcut"])
def test_commands_train_translate_eval_export(tmp_path, name, colour_digits):
    demo = colour_digits
    result, output = invoke("train", name, "--a", demo / "train/a", "--b", demo / "train/b", "--size", 32,
                            "--load-size", 32, "--no-flip", "--batch-size", 2, "--steps", 2, "--ngf", 8, "--ndf", 8,
                            "--generator", "resnet_6blocks", "--netf-nc", 16, "--device", "cpu", "--workers", 0,
                            "--out", tmp_path / "run")
    assert result.exit_code == 0, output
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["model"] == name and config["options"]["channels_a"] == 3
    result, output = invoke("translate", tmp_path / "run", demo / "test/a", tmp_path / "out", "--device", "cpu",
                            "--workers", 0)
    assert result.exit_code == 0, output
    written = sorted((tmp_path / "out").glob("*.png"))
    assert len(written) == len(list((demo / "test/a").glob("*.png")))
    assert np.asarray(Image.open(written[0])).shape == (32, 32, 3)
    assert_one_line_error(invoke("translate", tmp_path / "run", demo / "test/a", tmp_path / "o2", "--direction",
                                 "b2a")[0], "--direction", "a2b")
    result, output = invoke("eval", tmp_path / "run", "--a", demo / "test/a", "--b", demo / "test/b", "--device",
                            "cpu", "--json", tmp_path / "eval.json")
    assert result.exit_code == 0, output
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert {"fid_a2b", "kid_a2b", "psnr", "label_agreement"} <= set(metrics) and "fid_b2a" not in metrics
    onnxruntime = pytest.importorskip("onnxruntime")
    result, output = invoke("export", tmp_path / "run", "--out", tmp_path / "g.onnx")
    assert result.exit_code == 0, output
    session = onnxruntime.InferenceSession(str(tmp_path / "g.onnx"))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    exported = session.run(None, {"image": image.numpy()})[0]
    from img2img.loading import load_model  # noqa: PLC0415

    model, _, _ = load_model(tmp_path / "run")
    assert np.abs(exported - model.translate(image).numpy()).max() < 1e-4


def test_size_too_small_for_the_patchgan_is_one_line(tmp_path):
    write_unpaired(tmp_path)
    result, _ = invoke("train", "cut", "--a", tmp_path / "a", "--b", tmp_path / "b", "--size", 16)
    assert_one_line_error(result, "--size", "at least 32")


def test_the_blur_upsamplings_edge_padding_is_replication_padding_and_compiles():
    """The up-blur's edge padding, made of slices, gives nn.ReplicationPad2d(1)'s values and gradients; compiled,
    its backward runs (torch's own replication padding there fails the compiled code's stride check)."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 5, 7, requires_grad=True)
    weights = torch.randn(2, 3, 7, 9)
    ours = replicate_edges(images)
    assert torch.equal(ours, torch.nn.ReplicationPad2d(1)(images))
    (ours * weights).sum().backward()
    got = images.grad.clone()
    images.grad = None
    (torch.nn.ReplicationPad2d(1)(images) * weights).sum().backward()
    assert torch.allclose(got, images.grad)
    up = BlurUpsample(4).to(memory_format=torch.channels_last)
    features = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last).requires_grad_()
    torch.compiler.reset()
    try:
        compiled = speed.compile_module(up, "default", torch.device("cpu"))
        with speed.compile_errors("default", channels_last=True):
            out = compiled(features)
            (out * out).sum().backward()
    finally:
        torch.compiler.reset()
    got = features.grad.clone()
    features.grad = None
    want = up(features)
    (want * want).sum().backward()
    assert out.shape == (2, 4, 12, 12) and torch.allclose(out, want, atol=1e-5)
    assert torch.allclose(got, features.grad, atol=1e-4)
