"""The shared loop on the MNIST GAN: phases update only their own networks; losses move the right way."""

import copy

import pytest
import torch

from img2img.checkpoint import read
from img2img.train import Trainer, linear_decay, train

from test_cli import invoke


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def trainer(tmp_path, mnist_run):
    return Trainer(mnist_run(), tmp_path)


def _phase(trainer, name):
    return next(p for p in trainer.model.phases if p.name == name)


def test_generator_phase_trains_every_generator_module_and_leaves_d_unchanged(trainer):
    g, d = trainer.model.nets["g"], trainer.model.nets["d"]
    d_before, g_before = _snapshot(d), _snapshot(g)
    trainer.train_phase(_phase(trainer, "g"), trainer.data.batch(0), {})
    for name, param in g.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in d.parameters())
    assert _equal(_snapshot(d), d_before)
    changed = _snapshot(g)
    assert all(not torch.equal(changed[k], g_before[k]) for k, _ in g.named_parameters())


def test_discriminator_phase_trains_every_d_module_and_leaves_g_unchanged(trainer):
    g, d = trainer.model.nets["g"], trainer.model.nets["d"]
    g_before = {k: v.detach().clone() for k, v in g.named_parameters()}
    trainer.train_phase(_phase(trainer, "d"), trainer.data.batch(0), {})
    for name, param in d.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in g.parameters())
    assert all(torch.equal(p, g_before[k]) for k, p in g.named_parameters())


@pytest.mark.parametrize("loss", ["non-saturating", "minimax", "lsgan", "wgan-gp", "hinge"])
def test_full_steps_run_with_every_loss(tmp_path, mnist_run, loss):
    trainer = Trainer(mnist_run(loss=loss), tmp_path)
    logs = trainer.train_step(trainer.data.batch(0))
    assert {"g_loss", "d_loss"} <= logs.keys()
    assert all(torch.isfinite(v) for v in logs.values())
    if loss == "wgan-gp":
        assert logs["gp"] > 0


def test_discriminator_only_training_lowers_its_loss(trainer):
    phase = _phase(trainer, "d")
    losses = [trainer.train_phase(phase, trainer.data.batch(step), {})["d_loss"].item() for step in range(40)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
    factor = linear_decay(steps=10, decay_steps=4)
    assert [factor(s) for s in range(11)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_trainer_applies_the_schedule(tmp_path, mnist_run):
    trainer = Trainer(mnist_run(steps=4, decay_steps=2), tmp_path)
    rates = []
    for step in range(4):
        trainer.train_step(trainer.data.batch(step))
        rates.append(trainer.optimizers["g"].param_groups[0]["lr"])
    assert rates == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])


def test_fit_writes_the_run_folder(tmp_path, mnist_run):
    run = mnist_run(steps=10)
    result = Trainer(run, tmp_path).fit()
    assert result.step == 10 and result.checkpoint == tmp_path / "last.ckpt"
    assert (tmp_path / "samples" / "step-00000010.png").is_file()
    assert (tmp_path / "train.log").read_text().count("finished at step 10") == 1
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2  # log every 5 steps
    assert copy.deepcopy(run) == run


def test_ema_tracks_the_generator_and_is_what_inference_uses(tmp_path, mnist_run):
    trainer = Trainer(mnist_run(ema_decay=0.5), tmp_path)
    g, average = trainer.model.nets["g"], trainer.ema["g"]
    expected = {k: v.detach().clone() for k, v in g.named_parameters()}
    trainer.train_step(trainer.data.batch(0))
    for name, param in g.named_parameters():
        expected[name] = 0.5 * expected[name] + 0.5 * param.detach()
        assert torch.allclose(dict(average.named_parameters())[name], expected[name])
    assert not any(p.requires_grad for p in average.parameters())
    assert set(trainer.state()["ema"]) == {"g"}
    inference = trainer.inference_model()
    assert torch.equal(inference.nets["g"].layers[0].weight, average.layers[0].weight)
    assert not torch.equal(trainer.model.nets["g"].layers[0].weight, average.layers[0].weight)


def test_running_out_of_memory_is_one_line_naming_the_batch_and_keeps_the_checkpoint(tmp_path, mnist_run,
                                                                                    monkeypatch):
    from img2img.errors import UserError  # noqa: PLC0415
    from img2img.models.mnist_gan import MnistGan  # noqa: PLC0415

    real = MnistGan.phase_loss

    def phase_loss(self, phase, nets, batch, carry):
        if carry["step"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, phase, nets, batch, carry)

    monkeypatch.setattr(MnistGan, "phase_loss", phase_loss)
    with pytest.raises(UserError, match=r"out of CPU memory at step 3: --batch-size 8 does not fit") as caught:
        train(mnist_run(steps=6, save_every_steps=2), tmp_path / "run")
    assert "is intact" in str(caught.value) and (tmp_path / "run" / "last.ckpt").exists()
    monkeypatch.undo()  # memory is back: the run goes on from its checkpoint
    result, _ = invoke("train", "mnist-gan", "--resume", tmp_path / "run")
    assert result.exit_code == 0 and read(tmp_path / "run")["step"] == 6
