"""Generator: building, saving/loading diffusers pipeline directories, the policy and its anchor."""

import pytest
import torch
from diffusers import PNDMScheduler

from cxrl.models.generator import GeneratorArch, build_pipeline, load_pipeline, tiny_arch
from cxrl.rl.policy import Policy

PROMPTS = ["small left pleural effusion.", "no acute cardiopulmonary process."]


def unet_out(policy: Policy, embeds: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(len(embeds), 4, 16, 16, generator=gen)
    with torch.no_grad():
        return policy.predict_noise(x, torch.tensor(500), embeds, guidance_scale=3.0)


def perturb_lora(policy: Policy) -> None:
    with torch.no_grad():
        for name, p in policy.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


def test_build_shapes_and_frozen_base():
    pipe = build_pipeline(tiny_arch())
    assert pipe.vae.config.in_channels == 1 and pipe.unet.config.sample_size == 16
    assert not any(p.requires_grad for m in (pipe.vae, pipe.unet, pipe.text_encoder) for p in m.parameters())
    assert pipe.tokenizer.model_max_length == 32


def test_arch_rejects_resolution_not_divisible_by_vae_factor():
    with pytest.raises(ValueError, match="multiple of the VAE factor"):
        GeneratorArch(resolution=36, vae_channels=(8, 16, 16, 16))


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    pipe = build_pipeline(tiny_arch(), seed=3)
    pipe.save_pretrained(tmp_path / "gen")
    loaded = load_pipeline(tmp_path / "gen")
    a, b = Policy(pipe, lora_rank=0, ace_tokens=0), Policy(loaded, lora_rank=0, ace_tokens=0)
    ea, eb = a.encode_prompts(PROMPTS), b.encode_prompts(PROMPTS)
    torch.testing.assert_close(ea, eb)
    torch.testing.assert_close(unet_out(a, ea), unet_out(b, eb))


def test_loads_a_roentgen_style_directory(tmp_path):
    """Stable Diffusion layout: RGB VAE, PNDM scheduler with set_alpha_to_one, saved by diffusers."""
    pipe = build_pipeline(tiny_arch().model_copy(update={"image_channels": 3}))
    pipe.scheduler = PNDMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=True,
        steps_offset=1,
    )
    pipe.save_pretrained(tmp_path / "roentgen")
    loaded = load_pipeline(tmp_path / "roentgen")
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert loaded.scheduler.config.set_alpha_to_one is False
    from cxrl.rl.sampler import sample

    policy = Policy(loaded, lora_rank=2, ace_tokens=3)
    traj = sample(policy, policy.encode_prompts(PROMPTS), [0, 1], num_steps=3, guidance_scale=2.0)
    assert traj.images.shape == (2, 1, 32, 32)
    assert traj.images.min() >= 0 and traj.images.max() <= 1


def test_load_rejects_non_pipeline_directories(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(tmp_path)
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "X", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    with pytest.raises(ValueError, match="lacks components"):
        load_pipeline(tmp_path)


def test_only_lora_and_ace_train():
    policy = Policy(build_pipeline(tiny_arch()), lora_rank=2, ace_tokens=3)
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n == "ace.tokens" for n in names)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if "lora_" in n}
    assert targets == {"to_q", "to_k", "to_v", "0"}  # to_out.0
    assert policy.ace.tokens.shape == (3, 16)


def test_anchor_is_the_base_model_without_ace():
    base = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=0, ace_tokens=0)
    policy = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=3)
    perturb_lora(policy)
    short = ["left effusion.", "no acute process."]  # fit M = 32 - 3 byte tokens: same text as the base
    embeds = policy.encode_prompts(short)
    with policy.anchor():
        assert policy.condition(embeds).shape == embeds.shape == (2, 32, 16)
        anchor_out = unet_out(policy, embeds)
    torch.testing.assert_close(anchor_out, unet_out(base, base.encode_prompts(short)))
    assert policy.condition(embeds).shape == (2, 32, 16)  # N + M = L
    assert not torch.allclose(unet_out(policy, embeds), anchor_out)
    assert not policy.is_anchor  # adapters are back on after the context


def test_ace_condition_fits_the_text_window_n_plus_m_equals_l():
    """Paper: N = 3 ACE tokens + M <= 74 report positions = CLIP's 77; here L = 32, so M = 29."""
    policy = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=0, ace_tokens=3)
    tok = policy.pipe.tokenizer
    long = "moderate cardiomegaly with small bilateral pleural effusions."  # 61 bytes > 29 positions
    ids = policy.tokenize([long, "clear."])
    assert ids.shape == (2, 32) and policy.report_positions == 29
    assert ids[0, 28] == tok.eos_token_id and ids[0, 27] != tok.eos_token_id  # truncated, EOS kept in c_p
    assert tok.decode(ids[0, 1:28]).replace(" ", "") == long.replace(" ", "")[:27]  # bytes, no spaces
    assert (ids[1, 8:] == tok.pad_token_id).all()
    embeds = policy.encode_prompts([long, "clear."])  # [2, L, d]
    cond = policy.condition(embeds)
    assert cond.shape == (2, 32, 16)  # [c_s (3), c_p (29)]
    torch.testing.assert_close(cond[:, :3], policy.ace.tokens.expand(2, -1, -1))
    # c_p is what the (causal) text encoder gives at length M: the extra L - M positions change nothing
    at_m = policy.pipe.text_encoder(ids[:, :29])[0]
    torch.testing.assert_close(cond[:, 3:], at_m)
    seen = []  # the UNet's cross-attention sees L positions, for the guided and unguided branches
    hook = policy.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"].shape[1]), with_kwargs=True
    )
    unet_out(policy, embeds)
    hook.remove()
    assert seen == [32]
    with pytest.raises(ValueError, match="fewer ACE tokens"):
        Policy(build_pipeline(tiny_arch()), lora_rank=0, ace_tokens=30)


def test_ace_alone_changes_the_policy_and_lora_starts_at_zero():
    policy = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=3)
    lora_b = [p for n, p in policy.unet.named_parameters() if "lora_B" in n]
    assert all(torch.count_nonzero(p) == 0 for p in lora_b)  # LoRA is the identity at init
    no_ace = Policy(build_pipeline(tiny_arch(), seed=1), lora_rank=2, ace_tokens=0)
    embeds = policy.encode_prompts(PROMPTS)
    assert not torch.allclose(unet_out(policy, embeds), unet_out(no_ace, embeds))


def test_encode_rejects_empty_prompt_list():
    policy = Policy(build_pipeline(tiny_arch()), lora_rank=0, ace_tokens=0)
    with pytest.raises(ValueError, match="no prompts"):
        policy.encode_prompts([])


def test_fp16_base_keeps_adapters_and_log_probs_in_fp32(tmp_path):
    from cxrl.rl.ddim import ddim_step_logprob
    from cxrl.rl.sampler import sample

    build_pipeline(tiny_arch()).save_pretrained(tmp_path / "gen")
    policy = Policy(load_pipeline(tmp_path / "gen", dtype=torch.float16), lora_rank=2, ace_tokens=3)
    assert policy.unet.dtype == torch.float16
    assert {p.dtype for p in policy.trainable_parameters()} == {torch.float32}
    embeds = policy.encode_prompts(PROMPTS)
    traj = sample(policy, embeds, [1, 2], num_steps=2, guidance_scale=2.0)
    assert traj.log_probs.dtype == torch.float32 and torch.isfinite(traj.log_probs).all()
    eps = policy.predict_noise(traj.latents[:, 0], traj.timesteps[0], embeds, 2.0)
    step = ddim_step_logprob(
        policy.pipe.scheduler, eps, traj.timesteps[0], traj.latents[:, 0], prev_sample=traj.latents[:, 1]
    )
    torch.testing.assert_close(step.log_prob, traj.log_probs[:, 0])
    step.log_prob.sum().backward()
    assert policy.ace.tokens.grad is not None


def test_committed_default_generator_matches_its_manifest():
    import json

    from cxrl.infra.hashing import sha256_file as sha256
    from cxrl.models.generator import DEFAULT_DIR

    manifest = json.loads((DEFAULT_DIR / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert sha256(DEFAULT_DIR / name) == digest, name
    assert manifest["size_bytes"] < 10e6
    pipe = load_pipeline("default")
    assert pipe.vae.config.in_channels == 1 and pipe.unet.config.sample_size == 16
    assert pipe.vae.config.sample_size == manifest["config"]["arch"]["resolution"]
