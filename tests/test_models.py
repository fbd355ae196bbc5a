"""The model contract, checked for every registered model (as timm parametrizes its tests over its registry).

Each model builds at a tiny size from its own :meth:`synthetic` configuration;
in each phase every updated parameter gets a finite gradient and every other
network stays unchanged; a checkpoint round-trips bit for bit; ``train NAME
--help`` and ``bench NAME`` work; translation goes through the model's own
targets.  A new model file is covered here with no edit.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from img2img import speed
from img2img.bench import SyntheticBatches
from img2img.config import RunConfig, TrainConfig
from img2img.errors import UserError
from img2img.loading import load_model
from img2img.models import MODELS
from img2img.models.base import PROTOCOLS, GANModel
from img2img.train import Trainer
from img2img.translate import checkpoint_generator

from test_cli import invoke

NAMES = sorted(MODELS)
SMALL = {"base_channels": 8, "d_base_channels": 8}  # the widths of the tiny test networks, where a model has them


def tiny_size(model_class: type[GANModel]) -> int:
    """The smallest of a few image sides the model's networks take (the only one, for the MLP models)."""
    if getattr(model_class, "fixed_size", None):
        return model_class.fixed_size
    for size in (32, 64):
        try:
            model_class.check_size(size)
        except UserError:
            continue
        return size
    raise AssertionError(f"{model_class.name} takes neither 32 nor 64")


def tiny_trainer(name: str, folder, batch_size: int = 2, device: str = "cpu", options: dict | None = None,
                 **train_settings) -> tuple[Trainer, object]:
    """A model at a tiny size on its own synthetic batch; ``options`` and ``train_settings`` change its config."""
    model_class = MODELS[name]
    config, batch = model_class.synthetic(tiny_size(model_class), batch_size, torch.Generator().manual_seed(0))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {**SMALL, **(options or {})}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if k in fields})
    settings = dict(steps=4, batch_size=batch_size, device=device, num_workers=0, save_every_steps=100,
                    sample_every_steps=100, log_every_steps=100)
    train = TrainConfig(**{**settings, **train_settings})
    trainer = Trainer(RunConfig(name, train, config), folder, data=SyntheticBatches(batch))
    return trainer, batch


def check_phases(trainer: Trainer, batch) -> None:
    """One training step, phase by phase: each phase gives every parameter it updates a finite gradient, finite
    losses, and leaves every other network's parameters unchanged and without a gradient."""
    model, name = trainer.model, trainer.run.model
    model.train()
    batch = model.move_batch(batch, trainer.device)
    # a new step, as train_step says at its start: with CUDA graphs (--compile auto on a GPU), the outputs of the
    # steps before may be reused from here on, and the ones this step makes stay valid until the next
    speed.mark_step(trainer.compile_mode, trainer.device)
    carry = {"step": 0}
    for phase in model.phases:
        # parameters: a frozen discriminator in training mode still updates its batch-norm running statistics in
        # the generator phase, as in the official code (they are buffers, and D is never used in eval mode)
        before = {net: {k: v.clone() for k, v in model.nets[net].named_parameters()}
                  for net in model.nets if net not in phase.networks}
        for net in model.nets.values():
            net.zero_grad(set_to_none=True)
        logs = trainer.train_phase(phase, batch, carry)
        assert logs and all(torch.isfinite(v).all() for v in logs.values()), (phase.name, logs)
        for net in phase.networks:
            for pname, parameter in model.nets[net].named_parameters():
                assert parameter.grad is not None, f"{name} {phase.name}: {net}.{pname} got no gradient"
                assert torch.isfinite(parameter.grad).all(), f"{name} {phase.name}: {net}.{pname}"
        for net, state in before.items():
            for key, value in model.nets[net].named_parameters():
                assert value.grad is None, f"{name} {phase.name}: frozen {net}.{key} got a gradient"
                assert torch.equal(value, state[key]), f"{name} {phase.name}: frozen {net}.{key} changed"


def test_every_model_is_registered_and_declares_its_contract():
    assert {"mnist-gan", "pix2pix", "cyclegan", "discogan"} <= set(MODELS)
    for name, model_class in MODELS.items():
        assert model_class.name == name and model_class.phases
        assert model_class.evaluation is None or model_class.evaluation in PROTOCOLS
        assert model_class.evaluation is None or model_class.default_metric in model_class.metrics()
        assert dataclasses.is_dataclass(model_class.Config)
        assert set(model_class.train_defaults) <= {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("name", NAMES)
def test_each_phase_updates_its_networks_and_leaves_the_others_unchanged(name, tmp_path):
    trainer, batch = tiny_trainer(name, tmp_path)
    check_phases(trainer, batch)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trips_bit_for_bit(name, tmp_path):
    trainer, batch = tiny_trainer(name, tmp_path)
    for _ in range(2):
        trainer.train_step(trainer.model.move_batch(batch, trainer.device))
    trainer.save()
    loaded, run, payload = load_model(tmp_path, use_ema=False)
    assert run == trainer.run and payload["step"] == 2
    for net_name, net in trainer.model.nets.items():
        saved = net.state_dict()
        for key, value in loaded.nets[net_name].state_dict().items():
            assert torch.equal(value, saved[key]), f"{name}: {net_name}.{key}"


@pytest.mark.parametrize("name", NAMES)
def test_translation_goes_through_the_models_own_targets(name, tmp_path):
    trainer, batch = tiny_trainer(name, tmp_path)
    trainer.save()
    model, _, payload = load_model(tmp_path)
    targets = model.translation_targets()
    if not targets:
        with pytest.raises(UserError, match="sample"):
            model.translation()
        return
    for target in targets:
        translation = model.translation(target)
        images = torch.rand(2, translation.in_channels, 16 if name != "pix2pix" else 32, 32) * 2 - 1
        out = model.translate(images, target)
        assert out.shape == (2, translation.out_channels, *images.shape[-2:])
        assert out.min() >= -1 and out.max() <= 1
        net, info = checkpoint_generator(payload, target)
        assert info.target == target and info.in_channels == translation.in_channels
    with pytest.raises(UserError, match=model.translation_option):
        model.translation("nowhere")


@pytest.mark.parametrize("name", NAMES)
def test_train_help_lists_the_models_options(name):
    result, output = invoke("train", name, "--help")
    assert result.exit_code == 0, output
    assert "--steps" in output and "--out" in output and "--resume" in output
    for field in dataclasses.fields(MODELS[name].Config):
        meta = field.metadata.get("cli")
        if meta is not None:
            assert (meta.flag or "--" + field.name.replace("_", "-")) in output


@pytest.mark.parametrize("name", NAMES)
def test_bench_runs_every_model_on_the_cpu(name):
    size = tiny_size(MODELS[name])
    result, output = invoke("bench", name, "--size", size, "--batch-size", 2, "--steps", 1, "--warmup", 0,
                            "--device", "cpu", "--json")
    assert result.exit_code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["settings"]["target"] == name and report["flops_per_step"] > 0


def test_the_template_model_trains_translates_and_round_trips(tmp_path):
    """models/_template.py is not registered (its name starts with _), but it must stay a working model."""
    from img2img.models import _template  # noqa: PLC0415 - registers "template" for this test

    assert "template" not in MODELS  # the listing skips it
    model_class = _template.TemplateGAN
    options = model_class.Config(size=32, load_size=32, channels_a=3, channels_b=3, bits_a=8, bits_b=8,
                                 base_channels=8, d_base_channels=8, n_blocks=1)
    batch = {side: torch.rand(2, 3, 32, 32) * 2 - 1 for side in "ab"}
    train = TrainConfig(steps=2, batch_size=2, device="cpu", num_workers=0)
    trainer = Trainer(RunConfig("template", train, options), tmp_path, data=SyntheticBatches(batch))
    for _ in range(2):
        logs = trainer.train_step(batch)
    assert {"g_loss", "d_loss", "identity"} <= set(logs)
    trainer.save()
    model, _, payload = load_model(tmp_path)
    assert model.translate(batch["a"]).shape == (2, 3, 32, 32)
    assert model_class.metrics()[:2] == ("fid_a2b", "kid_a2b")
    with pytest.raises(UserError, match="--direction"):
        checkpoint_generator(payload, "b2a")
