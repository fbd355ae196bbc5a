import math

import pytest
import torch

from img2img import losses
from img2img.errors import UserError

BIG = 30.0  # a logit this large is a confident decision


def test_perfect_discriminator_has_zero_bce_loss():
    real, fake = torch.full((4, 1), BIG), torch.full((4, 1), -BIG)
    assert losses.bce_discriminator(real, fake).item() == pytest.approx(0.0, abs=1e-12)


def test_undecided_discriminator_has_bce_loss_two_log_two():
    zeros = torch.zeros(4, 1)
    assert losses.bce_discriminator(zeros, zeros).item() == pytest.approx(2 * math.log(2))


def test_generator_losses_at_an_undecided_discriminator():
    zeros = torch.zeros(4, 1)
    assert losses.non_saturating_generator(zeros).item() == pytest.approx(math.log(2))
    assert losses.minimax_generator(zeros).item() == pytest.approx(-math.log(2))


def test_minimax_saturates_where_non_saturating_does_not():
    fake = torch.full((3, 1), -BIG, requires_grad=True)  # D rejects the fakes confidently
    (minimax_grad,) = torch.autograd.grad(losses.minimax_generator(fake), fake)
    (ns_grad,) = torch.autograd.grad(losses.non_saturating_generator(fake), fake)
    assert minimax_grad.abs().max() < 1e-10
    assert ns_grad.abs().min() > 0.3


def test_least_squares_known_values():
    ones, zeros = torch.ones(5, 1), torch.zeros(5, 1)
    assert losses.least_squares_discriminator(ones, zeros).item() == 0.0
    assert losses.least_squares_discriminator(zeros, ones).item() == 2.0
    assert losses.least_squares_generator(ones).item() == 0.0
    assert losses.least_squares_generator(torch.full((2, 1), 3.0)).item() == 4.0


def test_hinge_and_wasserstein_known_values():
    real, fake = torch.tensor([[2.0], [1.0]]), torch.tensor([[-1.0], [0.5]])
    assert losses.hinge_discriminator(real, fake).item() == pytest.approx((0 + 0 + 0 + 1.5) / 2)
    assert losses.hinge_generator(fake).item() == pytest.approx(0.25)
    assert losses.wasserstein_discriminator(real, fake).item() == pytest.approx(-0.25 - 1.5)
    assert losses.wasserstein_generator(fake).item() == pytest.approx(0.25)


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form_and_trains_the_critic():
    weight = torch.tensor([3.0, 4.0], requires_grad=True)  # ‖∇D‖ = ‖w‖ = 5 everywhere

    def critic(x):
        return (x * weight).sum(dim=1)

    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    penalty = losses.gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx((5 - 1) ** 2)
    (grad,) = torch.autograd.grad(penalty, weight)
    # d/dw (‖w‖ - 1)^2 = 2 (‖w‖ - 1) w / ‖w‖
    assert torch.allclose(grad, 2 * 4 * weight.detach() / 5)


def test_wgan_gp_applies_the_penalty_with_weight_ten():
    weight = torch.tensor([3.0, 4.0], requires_grad=True)

    def critic(x):
        return (x * weight).sum(dim=1)

    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    loss, parts = losses.get_loss("wgan-gp").discriminator_loss(critic, real, fake)
    plain = critic(fake).mean() - critic(real).mean()
    assert parts["gp"].item() == pytest.approx(16.0)
    assert loss.item() == pytest.approx(plain.item() + 10 * 16.0, rel=1e-5)


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_every_loss_gives_finite_gradients(name):
    loss = losses.get_loss(name)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.randn(16, 3), torch.randn(16, 3, requires_grad=True)
    d_loss, _ = loss.discriminator_loss(net, real, fake)
    d_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert net[0].weight.grad.abs().sum() > 0
    g_loss = loss.generator_loss(net(fake))
    (grad,) = torch.autograd.grad(g_loss, fake)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_loss_names_the_option_and_the_choices():
    with pytest.raises(UserError, match=r"--loss: unknown loss 'wasserstein'.*non-saturating"):
        losses.get_loss("wasserstein")
