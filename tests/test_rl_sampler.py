import pytest
import torch

from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rl.policy import Policy
from cxrl.rl.sampler import concat, sample, seeded_noise

PROMPTS = ["small left pleural effusion.", "no acute disease.", "cardiomegaly."]


@pytest.fixture(scope="module")
def policy():
    p = Policy(build_pipeline(tiny_arch(), seed=0), lora_rank=2, ace_tokens=3)
    with torch.no_grad():
        for name, param in p.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    return p


def test_trajectory_shapes_and_ranges(policy):
    traj = sample(policy, policy.encode_prompts(PROMPTS), [1, 2, 3], num_steps=4, guidance_scale=3.0)
    assert traj.latents.shape == (3, 5, 4, 16, 16)
    assert traj.log_probs.shape == (3, 4) and torch.isfinite(traj.log_probs).all()
    assert traj.timesteps.shape == (4,) and (traj.timesteps[:-1] > traj.timesteps[1:]).all()
    assert traj.images.shape == (3, 1, 32, 32)
    assert traj.images.min() >= 0 and traj.images.max() <= 1


def test_same_seed_same_noise_for_policy_and_anchor(policy):
    embeds = policy.encode_prompts(PROMPTS)
    a = sample(policy, embeds, [5, 6, 7], num_steps=3)
    b = sample(policy, embeds, [5, 6, 7], num_steps=3)
    with policy.anchor():
        anchor = sample(policy, embeds, [5, 6, 7], num_steps=3)
    torch.testing.assert_close(a.latents, b.latents)  # seeded: reproducible
    init, _ = seeded_noise([5, 6, 7], (4, 16, 16), 3)
    torch.testing.assert_close(anchor.latents[:, 0], init)
    torch.testing.assert_close(a.latents[:, 0], init)  # same initial noise
    assert not torch.allclose(anchor.latents[:, -1], a.latents[:, -1])  # different models


def test_step_seeds_share_the_initial_latent_only(policy):
    embeds = policy.encode_prompts(PROMPTS)
    own = sample(policy, embeds, [5, 6, 7], num_steps=3, decode=False)
    fresh = sample(policy, embeds, [5, 6, 7], num_steps=3, decode=False, step_seeds=[8, 9, 10])
    torch.testing.assert_close(fresh.latents[:, 0], own.latents[:, 0])  # same x_T
    for i in range(3):  # every image's steps differ from its own-seed steps
        assert not torch.allclose(fresh.latents[i, 1], own.latents[i, 1])
    init, steps = seeded_noise([5], (4, 16, 16), 3, step_seeds=[8])
    init8, steps8 = seeded_noise([8], (4, 16, 16), 3)
    torch.testing.assert_close(init, seeded_noise([5], (4, 16, 16), 3)[0])
    assert not torch.allclose(init, init8)
    # the step noise of step seed s is the noise drawn from a fresh generator seeded with s
    torch.testing.assert_close(
        steps[:, 0], torch.randn((3, 4, 16, 16), generator=torch.Generator().manual_seed(8))
    )
    with pytest.raises(ValueError, match="2 step seeds for 3 seeds"):
        sample(policy, embeds, [5, 6, 7], num_steps=3, step_seeds=[1, 2])


def test_noise_of_an_image_does_not_depend_on_its_batch():
    init_a, steps_a = seeded_noise([11, 12], (4, 8, 8), 2)
    init_b, steps_b = seeded_noise([12], (4, 8, 8), 2)
    torch.testing.assert_close(init_a[1:], init_b)
    torch.testing.assert_close(steps_a[:, 1:], steps_b)


def test_concat_and_errors(policy):
    embeds = policy.encode_prompts(PROMPTS)
    a = sample(policy, embeds[:2], [1, 2], num_steps=2, decode=False)
    b = sample(policy, embeds[2:], [3], num_steps=2, decode=False)
    joined = concat([a, b])
    assert len(joined) == 3 and joined.seeds == [1, 2, 3]
    c = sample(policy, embeds[2:], [3], num_steps=3, decode=False)
    with pytest.raises(ValueError, match="different timestep schedules"):
        concat([a, c])
    with pytest.raises(ValueError, match="one seed per image"):
        sample(policy, embeds, [1], num_steps=2)
