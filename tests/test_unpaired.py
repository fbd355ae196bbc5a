"""CycleGAN and DiscoGAN: networks, phases, cycle and feature-matching terms, the image pool, data errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from img2img.cli import main
from img2img.config import RunConfig, TrainConfig
from img2img.data.demo import grey_dilation3, orange_on_navy
from img2img.data.unpaired import UnpairedImages, folder_images
from img2img.errors import UserError
from img2img.models.cyclegan import CycleGAN, CycleGANConfig
from img2img.models.discogan import DiscoGAN, DiscoGANConfig, feature_matching
from img2img.nn.discogan import DiscoDiscriminator, DiscoGenerator
from img2img.nn.pool import ImagePool
from img2img.nn.resnet import ResnetGenerator
from img2img.train import Trainer

from test_pix2pix import smooth_images


def write_unpaired(root):
    """Grey images in A, their RGB negatives (different images) in B: a mapping both ways exists."""
    for index, image in enumerate(smooth_images(6, seed=1)):
        (root / "a").mkdir(exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).convert("RGB").save(root / "a" / f"{index}.png")
    for index, image in enumerate(smooth_images(5, seed=2)):
        (root / "b").mkdir(exist_ok=True)
        Image.fromarray(255 - image.astype(np.uint8)).convert("RGB").save(root / "b" / f"{index}.png")
    return root


@pytest.fixture
def unpaired(tmp_path):
    return write_unpaired(tmp_path)


def cyclegan_trainer(root, tmp_path, steps=30, lr=2e-4, train=None, **changes):
    settings = dict(a=str(root / "a"), b=str(root / "b"), size=32, load_size=32, flip=False, base_channels=8,
                    d_base_channels=8)
    settings.update(changes)
    loop = {**dict(steps=steps, batch_size=2, device="cpu", num_workers=0, lr=lr), **(train or {})}
    run = RunConfig("cyclegan", TrainConfig(**loop), CycleGAN.resolve(CycleGANConfig(**settings)))
    return Trainer(run, tmp_path / "run")


def discogan_trainer(root, tmp_path, steps=30, **changes):
    settings = dict(a=str(root / "a"), b=str(root / "b"), size=32, load_size=32, flip=False, base_channels=8,
                    d_base_channels=8)
    settings.update(changes)
    run = RunConfig("discogan", TrainConfig(steps=steps, batch_size=2, device="cpu", num_workers=0),
                    DiscoGAN.resolve(DiscoGANConfig(**settings)))
    return Trainer(run, tmp_path / "run")


@pytest.mark.parametrize("blocks", [6, 9])
def test_resnet_generator_shape_and_official_names(blocks):
    g = ResnetGenerator(3, 1, base_channels=4, n_blocks=blocks)
    assert g(torch.randn(2, 3, 32, 24)).shape == (2, 1, 32, 24)
    keys = set(g.state_dict())
    last = 10 + blocks + 7  # pad conv norm relu, 2×(conv norm relu), blocks, 2×(deconv norm relu), pad, conv: 26 for 9
    assert {"model.1.weight", "model.4.weight", "model.10.conv_block.1.weight", "model.10.conv_block.5.weight",
            f"model.{last}.weight", f"model.{last}.bias"} <= keys
    assert "model.1.bias" in keys and not any("running" in k for k in keys)  # instance norm: biases, no stats


def test_discogan_networks_shapes_and_features():
    g = DiscoGenerator(1, 3, size=64, base_channels=4)
    assert g(torch.randn(2, 1, 64, 64)).shape == (2, 3, 64, 64)
    d = DiscoDiscriminator(3, size=64, base_channels=4)
    logits, features = d.forward_with_features(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 1, 1)
    assert [f.shape[1:] for f in features] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]


@pytest.mark.parametrize("make", [cyclegan_trainer, discogan_trainer])
def test_generator_phase_trains_both_generators_and_freezes_both_discriminators(make, unpaired, tmp_path):
    trainer = make(unpaired, tmp_path)
    batch = next(trainer.data.iterate(0))
    nets = trainer.model.nets
    before = {name: {k: v.clone() for k, v in nets[name].named_parameters()} for name in ("d_a", "d_b")}
    carry = {"step": 1}
    trainer.train_phase(trainer.model.phases[0], batch, carry)
    for name in ("g_ab", "g_ba"):
        for pname, p in nets[name].named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (name, pname)
    for name in ("d_a", "d_b"):
        assert all(p.grad is None and torch.equal(before[name][k], p) for k, p in nets[name].named_parameters())
    g_before = {name: {k: v.clone() for k, v in nets[name].named_parameters()} for name in ("g_ab", "g_ba")}
    trainer.train_phase(trainer.model.phases[1], batch, carry)
    for name in ("d_a", "d_b"):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                   for p in nets[name].parameters())
    for name in ("g_ab", "g_ba"):
        assert all(torch.equal(g_before[name][k], p) for k, p in nets[name].named_parameters())


def test_cycle_term_falls_on_a_learnable_mapping(unpaired, tmp_path):
    # 120 steps: after 60 the ratio below ranged 0.40-0.58 over seeds 0-3 (the image pools' draws move it); after
    # 120, 0.26-0.35 over seeds 0-5
    trainer = cyclegan_trainer(unpaired, tmp_path, steps=120, lr=1e-3, lambda_identity=0.0)
    batches = trainer.data.iterate(0)
    cycle = [trainer.train_step(next(batches))["cycle_a"].item() for _ in range(120)]
    assert np.mean(cycle[-10:]) < 0.5 * np.mean(cycle[:5])


def test_identity_term_is_used_when_channels_match_and_dropped_when_not(unpaired, tmp_path):
    trainer = cyclegan_trainer(unpaired, tmp_path)
    assert "identity" in trainer.train_step(next(trainer.data.iterate(0)))
    grey = CycleGAN.resolve(CycleGANConfig(a=str(unpaired / "a"), b=str(unpaired / "b"), size=32, channels_a=1))
    assert grey.lambda_identity == 0 and grey.channels_a == 1 and grey.channels_b == 3


def test_shared_batches_give_the_same_losses_and_gradients_as_separate_calls(unpaired, tmp_path):
    """Without batch norm CycleGAN runs independent generator calls (and each D's real and fake scores) as one
    batch; that changes how the work is batched, not what is computed."""
    trainer = cyclegan_trainer(unpaired, tmp_path, steps=2)
    model = trainer.model
    assert model.joint
    batch = model.move_batch(next(trainer.data.iterate(0)), trainer.device)
    results = {}
    for joint in (True, False):
        model.joint = joint
        carry, losses, grads = {"step": 0}, {}, {}
        for phase in model.phases:
            for name, net in model.nets.items():
                net.zero_grad(set_to_none=True)
                net.requires_grad_(name in phase.networks)
            loss, logs = model.phase_loss(phase.name, model.nets, batch, carry)
            loss.backward()
            losses.update({key: float(value) for key, value in logs.items()})
            grads[phase.name] = [p.grad.clone() for net in phase.networks for p in model.nets[net].parameters()]
        results[joint] = losses, grads
    (joint_losses, joint_grads), (separate_losses, separate_grads) = results[True], results[False]
    assert joint_losses == pytest.approx(separate_losses, rel=1e-5, abs=1e-7)
    for phase, grads in joint_grads.items():
        # over all of a phase's parameters: a bias before instance norm has a true gradient of 0, so its computed
        # one is rounding noise, which differs between the two batchings
        have, want = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in separate_grads[phase]])
        assert (have - want).norm() <= 1e-5 * want.norm(), phase
    batch_norm = cyclegan_trainer(unpaired, tmp_path / "bn", steps=2, norm="batch")
    assert not batch_norm.model.joint  # batch statistics couple the images of a batch


def test_image_pool_mixes_current_and_past_images_half_the_time():
    torch.manual_seed(0)
    pool = ImagePool(size=10)
    first = torch.arange(10.0).view(10, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: every image comes straight back
    current, past = 0, 0
    for round_ in range(200):
        batch = torch.full((5, 1, 1, 1), 100.0 + round_)
        out = pool.query(batch)
        current += int((out == batch).sum())
        past += int((out != batch).sum())
        assert len(pool.images) == 10
    assert 0.4 < current / (current + past) < 0.6
    stored = pool.state()
    copy = ImagePool(size=10)
    copy.load(stored)
    assert torch.equal(copy.state(), stored)
    assert torch.equal(ImagePool(size=0).query(first), first)


def test_discogan_feature_matching_has_gradient_and_known_value():
    real = [torch.ones(4, 2, 3, 3), torch.zeros(4, 5)]
    fake = [torch.zeros(4, 2, 3, 3, requires_grad=True), torch.full((4, 5), 2.0, requires_grad=True)]
    value = feature_matching(real, fake)
    assert value.item() == pytest.approx(1.0 + 4.0)
    value.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fake)


def test_discogan_alternates_updates_and_follows_the_rate_schedule(unpaired, tmp_path):
    trainer = discogan_trainer(unpaired, tmp_path, curriculum_steps=4)
    assert [tuple(p.name for p in trainer.model.phases_at(s)) for s in range(4)] == [("d",), ("g",), ("g",), ("d",)]
    assert trainer.model.reconstruction_rate(3) == 0.01 and trainer.model.reconstruction_rate(4) == 0.5
    assert trainer.optimizers["g"].param_groups[0]["weight_decay"] == 1e-5
    batches = trainer.data.iterate(0)
    logs = [trainer.train_step(next(batches)) for _ in range(3)]
    assert "d_loss" in logs[0] and "fm_a" in logs[1] and "fm_b" in logs[2]


def test_unpaired_epoch_is_the_larger_folder_and_draws_are_seeded(unpaired):
    dataset = UnpairedImages(folder_images(unpaired / "a", "--a"), folder_images(unpaired / "b", "--b"), 3, 3,
                             32, 36)
    assert len(dataset) == 6
    assert torch.equal(dataset[(2, 9)]["b"], dataset[(2, 9)]["b"])
    partners = {dataset[(0, seed)]["b"].sum().item() for seed in range(20)}
    assert len(partners) > 1


def test_unpaired_data_errors_name_the_folder(unpaired, tmp_path):
    with pytest.raises(UserError, match=r"--b: .*nowhere does not exist"):
        CycleGAN.resolve(CycleGANConfig(a=str(unpaired / "a"), b=str(tmp_path / "nowhere"), size=32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--a: .*empty holds no images"):
        DiscoGAN.resolve(DiscoGANConfig(a=str(tmp_path / "empty"), b=str(unpaired / "b"), size=32))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(UserError, match=r"broken/x\.jpg: not a readable image"):
        CycleGAN.resolve(CycleGANConfig(a=str(tmp_path / "broken"), b=str(unpaired / "b"), size=32))
    with pytest.raises(UserError, match=r"--b is missing"):
        CycleGAN.resolve(CycleGANConfig(a=str(unpaired / "a"), size=32))


def test_checkpoint_keeps_the_image_pools_for_an_exact_resume(unpaired, tmp_path):
    trainer = cyclegan_trainer(unpaired, tmp_path, steps=3)
    batches = trainer.data.iterate(0)
    for _ in range(3):
        trainer.train_step(next(batches))
    state = trainer.state()
    assert state["model_state"]["pool_b"].shape == (6, 3, 32, 32)
    resumed = Trainer(trainer.run, tmp_path / "run", resume=state)
    assert torch.equal(resumed.model.pool_b.state(), trainer.model.pool_b.state())


def test_demo_colour_map():
    grey = np.zeros((1, 5, 5), np.uint8)
    grey[0, 2, 2] = 255
    assert grey_dilation3(grey)[0, 1:4, 1:4].min() == 255 and grey_dilation3(grey)[0, 0, 0] == 0
    colour = orange_on_navy(grey)
    assert colour.shape == (1, 5, 5, 3)
    assert colour[0, 0, 0].tolist() == [26, 26, 102] and colour[0, 2, 2].tolist() == [255, 153, 25]


@pytest.mark.parametrize("model", ["cyclegan", "discogan"])
def test_cli_trains_unpaired_models(model, unpaired, tmp_path):
    args = ["train", model, "--a", unpaired / "a", "--b", unpaired / "b", "--size", "32", "--steps", "3",
            "--batch-size", "2", "--ngf", "4", "--ndf", "4", "--workers", "0", "--out", tmp_path / model]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / model / "last.ckpt").is_file() and (tmp_path / model / "samples" / "last.png").is_file()
    bad = CliRunner().invoke(main, ["train", model, "--a", str(tmp_path / "missing"), "--b", str(unpaired / "b")])
    assert bad.exit_code == 1 and "--a:" in bad.output and "Traceback" not in bad.output
