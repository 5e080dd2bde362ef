"""Golden tests: our log-prob DDIM step against diffusers' DDIMScheduler.step (eta=1)."""

import math

import pytest
import torch
from diffusers import DDIMScheduler

from cxrl.models.generator import ddim_scheduler
from cxrl.rl.ddim import ddim_step_logprob


def make_scheduler(prediction_type: str = "epsilon", steps: int = 10) -> DDIMScheduler:
    config = dict(ddim_scheduler().config)
    config["prediction_type"] = prediction_type
    sched = DDIMScheduler.from_config(config)
    sched.set_timesteps(steps)
    return sched


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_mean_and_sample_match_diffusers_at_every_step(prediction_type):
    sched = make_scheduler(prediction_type)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    for t in sched.timesteps:  # includes the last step (previous timestep < 0)
        model_output = torch.randn(x.shape, generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        ref = sched.step(model_output, t, x, eta=1.0, variance_noise=noise).prev_sample
        ours = ddim_step_logprob(sched, model_output, t, x, eta=1.0, variance_noise=noise)
        torch.testing.assert_close(ours.prev_sample, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.mean + ours.std * noise, ref, rtol=1e-5, atol=1e-5)
        x = ref


def test_log_prob_is_the_gaussian_density_averaged_over_elements():
    sched = make_scheduler()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    t = sched.timesteps[3]
    out = ddim_step_logprob(sched, eps, t, x, generator=gen)
    normal = torch.distributions.Normal(out.mean.double(), out.std.double())
    expected = normal.log_prob(out.prev_sample.double()).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    # a sample far from the mean is less likely than the mean itself
    at_mean = ddim_step_logprob(sched, eps, t, x, prev_sample=out.mean)
    assert (at_mean.log_prob > out.log_prob).all()
    assert torch.allclose(at_mean.log_prob, -torch.log(out.std.flatten()) - 0.5 * math.log(2 * math.pi))


def test_per_sample_timesteps_equal_separate_steps():
    sched = make_scheduler()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    prev = torch.randn(x.shape, generator=gen)
    ts = torch.stack([sched.timesteps[0], sched.timesteps[5], sched.timesteps[-1]])
    batched = ddim_step_logprob(sched, eps, ts, x, prev_sample=prev)
    for i in range(3):
        single = ddim_step_logprob(sched, eps[i : i + 1], ts[i], x[i : i + 1], prev_sample=prev[i : i + 1])
        torch.testing.assert_close(batched.log_prob[i : i + 1], single.log_prob)
        torch.testing.assert_close(batched.mean[i : i + 1], single.mean)


def test_log_prob_gradient_reaches_the_model_output():
    sched = make_scheduler()
    x = torch.randn(1, 4, 8, 8)
    eps = torch.randn(1, 4, 8, 8, requires_grad=True)
    out = ddim_step_logprob(sched, eps, sched.timesteps[2], x, prev_sample=torch.randn(1, 4, 8, 8))
    out.log_prob.sum().backward()
    assert eps.grad is not None and eps.grad.abs().sum() > 0


def test_bad_settings_are_rejected():
    sched = make_scheduler()
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_logprob(sched, x, sched.timesteps[0], x, eta=0.0)
    unset = DDIMScheduler.from_config(sched.config)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_logprob(unset, x, 1, x)
    zero_var = DDIMScheduler.from_config(sched.config, set_alpha_to_one=True)
    zero_var.set_timesteps(10)
    with pytest.raises(ValueError, match="zero variance"):
        ddim_step_logprob(zero_var, x, zero_var.timesteps[-1], x)
