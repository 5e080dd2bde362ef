import pytest
import torch

from cxrl.rl.loss import ppo_loss


def test_at_ratio_one_the_gradient_is_reinforce():
    log_prob = torch.zeros(4, requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5, 3.0])
    out = ppo_loss(log_prob, torch.zeros(4), adv)
    out.loss.backward()
    torch.testing.assert_close(log_prob.grad, -adv / 4)  # d/dlogp of -A * exp(logp - old), averaged
    assert out.clipfrac == 0 and out.approx_kl == 0


def test_ratios_beyond_the_clip_range_give_no_gradient_in_the_improving_direction():
    # positive advantage, ratio already above 1 + eps: the clipped term is the max, constant
    log_prob = torch.tensor([0.01], requires_grad=True)
    out = ppo_loss(log_prob, torch.zeros(1), torch.tensor([1.0]), clip_range=1e-4)
    out.loss.backward()
    assert log_prob.grad.abs().item() == 0
    assert out.clipfrac.item() == 1.0
    torch.testing.assert_close(out.loss, torch.tensor(-(1 + 1e-4)))


def test_advantages_are_clipped():
    out = ppo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([100.0, -100.0]), adv_clip_max=5.0)
    torch.testing.assert_close(out.loss, torch.tensor(0.0))
    one = ppo_loss(torch.zeros(1), torch.zeros(1), torch.tensor([100.0]), adv_clip_max=5.0)
    torch.testing.assert_close(one.loss, torch.tensor(-5.0))


def test_rejects_shape_mismatch_and_bad_ranges():
    with pytest.raises(ValueError, match="shapes differ"):
        ppo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="clip_range"):
        ppo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), clip_range=0)


def test_gaussian_kl_by_hand():
    from cxrl.rl.loss import gaussian_kl

    # two samples of 2 elements; std 0.5 and 2: KL = (d^2 / (2 s^2)) averaged over elements
    mean = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    ref = torch.tensor([[0.0, 2.0], [3.0, -1.0]])
    std = torch.tensor([[0.5], [2.0]])
    # sample 0: (1/(2*.25) + 0)/2 = 1.0; sample 1: (9/8 + 1/8)/2 = 0.625
    torch.testing.assert_close(gaussian_kl(mean, ref, std), torch.tensor([1.0, 0.625]))
    # the same as torch.distributions' KL of the per-element Gaussians, averaged
    p = torch.distributions.Normal(mean, std.expand_as(mean))
    q = torch.distributions.Normal(ref, std.expand_as(ref))
    torch.testing.assert_close(gaussian_kl(mean, ref, std), torch.distributions.kl_divergence(p, q).mean(1))
    # no gradient flows into the reference
    m = mean.clone().requires_grad_(True)
    r = ref.clone().requires_grad_(True)
    gaussian_kl(m, r, std).sum().backward()
    assert r.grad is None and m.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        gaussian_kl(mean, ref[:1], std)
