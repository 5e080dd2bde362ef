"""The one CXRL epoch engine on a tiny random pipeline with the in-process reward backend, obtained
from the run builder (cxrl.rl.run.build) as every entry point obtains it."""

import json
import math

import pytest
import torch

from cxrl.models.generator import build_pipeline, tiny_arch
from cxrl.rewards.backend import InProcessRewards
from cxrl.rewards.factory import random_scorers
from cxrl.rl.anchor_store import DirAnchorStore, MemoryAnchorStore
from cxrl.rl.checkpoint import HISTORY, load_checkpoint
from cxrl.rl.config import CXRLConfig
from cxrl.rl.ddim import ddim_step_logprob
from cxrl.rl.engine import Engine
from cxrl.rl.plan import FreshNoise, SeedBank, bank_seed
from cxrl.rl.policy import Policy, fitting_reports, make_policy
from cxrl.rl.run import Wiring, build
from cxrl.rl.sinks import HistoryFile, Sink, TensorBoard

REPORTS = [
    "Small left pleural effusion.",
    "No acute cardiopulmonary process.",
    "Cardiomegaly without pulmonary edema.",
    "Right lower lobe pneumonia.",
    "Pacemaker leads in the right ventricle. Lungs are clear.",
]


def small_config(**overrides) -> CXRLConfig:
    return CXRLConfig.load("cpu-small", {"sampling.num_steps": 4, **overrides})


def backend(cfg: CXRLConfig) -> InProcessRewards:
    return InProcessRewards(
        *random_scorers(0), weights=cfg.rewards.weights
    )  # as made: the engine sends no anchors


def tiny_policy(cfg: CXRLConfig) -> Policy:
    return make_policy(cfg, build_pipeline(tiny_arch(), seed=1))


def make_engine(
    cfg: CXRLConfig, run_dir=None, reports=REPORTS, wiring: Wiring | None = None, backend_=None, **kwargs
) -> Engine:
    """The engine :func:`cxrl.rl.run.build` makes of ``cfg`` over ``reports`` (by default fresh noise,
    no anchor store; ``anchors=`` and ``sinks=`` pass through)."""
    built = build(
        cfg,
        reports,
        backend_ or backend(cfg),
        policy=tiny_policy(cfg),
        wiring=wiring,
        run_dir=run_dir,
        **kwargs,
    )
    return built.engine


def trainable(policy: Policy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


def snapshot(policy: Policy) -> dict[str, torch.Tensor]:
    modules = {"unet": policy.unet, "vae": policy.pipe.vae, "text": policy.pipe.text_encoder}
    out = {f"{m}.{n}": p.detach().clone() for m, mod in modules.items() for n, p in mod.named_parameters()}
    if policy.ace is not None:
        out["ace.tokens"] = policy.ace.tokens.detach().clone()
    return out


def test_two_epochs_train_only_lora_and_ace_and_the_checkpoint_restores_them(tmp_path):
    cfg = small_config(epochs=2)
    engine = make_engine(cfg, tmp_path)
    before = snapshot(engine.policy)
    history = engine.run()
    after = snapshot(engine.policy)
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[-1]["global_step"] == 2 * cfg.optimizer_steps_per_epoch
    assert {"policy/total", "policy/r_align", "anchor/diag_acc", "anchor/consistency", "kl"} <= set(
        history[0]
    )
    assert history[0]["time/anchor"] > 0 and history[0]["time/score"] > 0
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "ace.tokens" in changed and any("lora_B" in k for k in changed)
    assert all("lora_" in k or k == "ace.tokens" for k in changed), sorted(changed)[:5]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "epoch-000002"
    fresh = make_policy(cfg, build_pipeline(tiny_arch(), seed=1))
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "epoch-000002", fresh)
    assert state["epoch"] == 2
    for name, value in snapshot(fresh).items():
        assert torch.equal(value, after[name]), name


class DiskUse(Sink):
    """Bytes under ``root`` and the checkpoint directories there after each epoch (checkpoint written)."""

    def __init__(self, root):
        self.root, self.bytes, self.dirs = root, [], []

    def epoch(self, metrics):
        self.bytes.append(sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()))
        self.dirs.append(sorted(p.name for p in self.root.glob("epoch-*")))


def test_a_run_keeps_the_newest_checkpoints_and_the_final_one_and_disk_use_grows_linearly(tmp_path):
    cfg = small_config(epochs=5, checkpoint_every=2, checkpoint_keep=2)
    disk = DiskUse(tmp_path / "checkpoints")
    engine = make_engine(cfg, tmp_path, sinks=[disk])
    history = engine.run()
    # epochs 2 and 4 by checkpoint_every, 5 as the final one; only the newest 2 stay
    assert disk.dirs == [[], ["epoch-000002"], ["epoch-000002"], ["epoch-000002", "epoch-000004"]] + [
        ["epoch-000004", "epoch-000005"]
    ]
    # the history is written once beside them; the final checkpoint reads back every epoch of it
    assert len(json.loads((tmp_path / "checkpoints" / HISTORY).read_text())) == 5
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "epoch-000005", tiny_policy(cfg))
    assert state["history"] == json.loads(json.dumps(history))
    # linear in epochs: 2N epochs take less than 2.5x the bytes of N; with K checkpoints on disk an
    # epoch adds about its history entry (1.5 kB here), not a checkpoint (148 kB)
    assert disk.bytes[3] < 2.5 * disk.bytes[1]
    assert 0 < disk.bytes[4] - disk.bytes[3] < 0.05 * disk.bytes[1], disk.bytes


def test_recomputed_log_probs_match_sampling_before_any_update():
    cfg = small_config()
    engine = make_engine(cfg)
    timings = dict.fromkeys(("sample", "anchor"), 0.0)
    traj = engine.sample_chunk(engine.plan(0).take(range(4)), timings).trajectory
    policy, sched = engine.policy, engine.policy.pipe.scheduler
    with torch.no_grad():
        for j, t in enumerate(traj.timesteps):
            ts = t.expand(len(traj))
            eps = policy.predict_noise(
                traj.latents[:, j], ts, traj.prompt_embeds, cfg.sampling.guidance_scale
            )
            out = ddim_step_logprob(sched, eps, ts, traj.latents[:, j], prev_sample=traj.latents[:, j + 1])
            torch.testing.assert_close(out.log_prob, traj.log_probs[:, j], rtol=1e-4, atol=1e-4)


def test_resumed_run_reproduces_the_uninterrupted_run_exactly(tmp_path):
    cfg = small_config(epochs=3)
    straight = make_engine(cfg, tmp_path / "a").run()
    interrupted = make_engine(cfg, tmp_path / "b")
    interrupted.run(epochs=1)
    resumed = make_engine(cfg, tmp_path / "b")  # a new process would build everything afresh
    assert resumed.resume() and resumed.epoch == 1
    history = resumed.run()
    keys = ("loss", "approx_kl", "clipfrac", "policy/total", "grad_norm", "anchor/consistency")
    assert [[h[k] for k in keys] for h in history] == [[h[k] for k in keys] for h in straight]


def test_direct_feedback_samples_no_anchor_and_a_reward_subset_without_ace():
    cfg = small_config(**{"rewards.rlcf": False})
    m = make_engine(cfg).run_epoch()
    assert m["time/anchor"] == 0 and not any(k.startswith("anchor/") for k in m)
    cfg = small_config(**{"ace.enabled": False, "rewards.weights": {"align": 1.0}})
    engine = make_engine(cfg)
    assert engine.policy.ace is None and not cfg.rewards.needs_anchor
    m = engine.run_epoch()
    assert "policy/r_align" in m and "anchor/diag_acc" not in m
    assert m["policy/total"] == pytest.approx(m["policy/r_align"], abs=1e-6)  # weight 1 on r_align alone


def test_seed_bank_anchors_come_from_the_store_in_later_epochs():
    cfg = small_config(epochs=2)
    store = MemoryAnchorStore()
    engine = make_engine(
        cfg, reports=REPORTS[:2], wiring=Wiring(plan="seed-bank", seed_bank=2), anchors=store
    )
    assert isinstance(engine.plan, SeedBank) and engine.plan.prompts == REPORTS[:2]
    first, second = engine.run_epoch(), engine.run_epoch()
    assert len(store) <= 4  # 2 reports x a bank of 2 seeds
    assert first["cache_hit_rate"] < 1 and second["cache_hit_rate"] == 1.0
    assert second["time/anchor"] < first["time/anchor"] / 4  # nothing was re-sampled


def test_a_directory_store_serves_a_second_run_the_anchors_of_the_first(tmp_path):
    """Two runs with one seed (e.g. CXRL and w/o ACE in `cxrl reproduce`) draw the same pairs: the
    second reads every anchor the first stored and trains exactly as it would sampling its own."""
    cfg = small_config(epochs=1)
    first = make_engine(cfg, anchors=DirAnchorStore(tmp_path, "v1"))
    first.run_epoch()
    assert first.history[-1]["cache_hit_rate"] == 0.0
    files = sorted((tmp_path / "v1").rglob("*.npz"))
    assert len(files) == len(set(zip(first.plan(0).prompts, first.plan(0).seeds, strict=True)))
    second = make_engine(cfg, anchors=DirAnchorStore(tmp_path, "v1"))
    alone = make_engine(cfg, anchors=MemoryAnchorStore())
    s2, s_alone = second.run_epoch(), alone.run_epoch()
    assert s2["cache_hit_rate"] == 1.0 and s2["time/anchor"] < s_alone["time/anchor"] / 4
    assert s2["anchor/total"] == s_alone["anchor/total"] and s2["policy/total"] == s_alone["policy/total"]
    for a, b in zip(second.policy.trainable_parameters(), alone.policy.trainable_parameters(), strict=True):
        assert torch.equal(a, b)
    # another version (generator, sampler or models changed) shares nothing
    assert DirAnchorStore(tmp_path, "v2").get_many(first.plan(0).prompts, first.plan(0).seeds) == [None] * 8
    # an entry lacking a component the run needs, or a damaged file, is a miss
    report, seed = first.plan(0).prompts[0], first.plan(0).seeds[0]
    assert DirAnchorStore(tmp_path, "v1", fields=("diag_acc",)).get_many([report], [seed])[0] is not None
    assert DirAnchorStore(tmp_path, "v1", fields=("no_such",)).get_many([report], [seed]) == [None]
    store = DirAnchorStore(tmp_path, "v1")
    store.path(report, seed).write_bytes(b"not an npz")
    assert store.get_many([report], [seed]) == [None] and store.misses == 1


def test_plans_are_deterministic_and_step_seeds_fresh_each_epoch():
    cfg = small_config()
    plan = FreshNoise(list(REPORTS), cfg.sampling, cfg.seed)
    assert plan(3) == plan(3) and plan(3) != plan(4)
    p0 = plan(0)
    assert len(p0) == 8 and p0.prompts[0] == p0.prompts[1] and len(set(p0.seeds)) == 8
    assert p0.step_seeds != plan(1).step_seeds and len(set(p0.step_seeds)) == 8
    bank = SeedBank(list(REPORTS), cfg.sampling, cfg.seed, bank=3)
    for epoch in range(3):
        e = bank(epoch)
        by_report: dict[str, set[int]] = {}
        for p, s in zip(e.prompts, e.seeds, strict=True):
            by_report.setdefault(p, set()).add(s)
        for p, seeds in by_report.items():
            assert seeds <= {bank_seed(cfg.seed, p, k) for k in range(3)}
    shared = FreshNoise(list(REPORTS), small_config(**{"sampling.shared_step_noise": True}).sampling, 0)
    assert shared(0).step_seeds is None


def test_timestep_batching_gives_the_same_parameters_and_statistics():
    runs = {}
    for per_call in (1, 3):
        cfg = small_config(epochs=1, **{"train.timesteps_per_call": per_call})
        engine = make_engine(cfg)
        torch.manual_seed(0)
        m = engine.run_epoch()
        runs[per_call] = (trainable(engine.policy), m)
    (p1, m1), (p3, m3) = runs[1], runs[3]
    for name in p1:
        torch.testing.assert_close(
            p3[name], p1[name], rtol=0, atol=1e-5
        )  # Adam amplifies fp32 summation order on near-zero gradients (3.9e-6 seen at 1 thread); a wrong gradient moves a parameter by ~lr = 3e-3
    # the loss at ratio 1 is -mean(advantage), a sum that nearly cancels: compare at the advantages' scale
    assert m3["loss"] == pytest.approx(m1["loss"], abs=1e-7)
    for key in ("approx_kl", "clipfrac", "grad_norm"):
        assert m3[key] == pytest.approx(m1[key], rel=1e-3, abs=1e-12), key
    assert m1["global_step"] == m3["global_step"]


def test_kl_regulariser_is_logged_and_changes_the_update():
    runs = {}
    for coef in (0.0, 50.0):
        cfg = small_config(**{"train.kl_coef": coef})
        engine = make_engine(cfg)
        runs[coef] = (engine.run_epoch(), trainable(engine.policy))
    (m0, p0), (m1, p1) = runs[0.0], runs[50.0]
    assert m0["kl"] == 0.0 and m1["kl"] > 0  # ACE's random init already moves the policy off the anchor
    assert m1["policy/total"] == m0["policy/total"]  # same samples: the regulariser acts on the update only
    assert not torch.equal(p0["ace.tokens"], p1["ace.tokens"])


class PoisonedRewards:
    """The random scorers, but the first image of every call gets a NaN posture reward."""

    def __init__(self, inner):
        self.inner = inner

    def score(self, images, reports, anchor_images=None):
        res = self.inner.score(images, reports, anchor_images)
        res.policy.r_align = res.policy.r_align.clone()
        res.policy.r_align[0] = float("nan")
        return res

    def info(self):
        return self.inner.info()


def test_non_finite_rewards_never_reach_the_adapters_or_a_checkpoint(tmp_path):
    cfg = small_config(epochs=1, **{"rewards.rlcf": False})
    engine = make_engine(cfg, tmp_path, backend_=PoisonedRewards(backend(cfg)))
    m = engine.run()[-1]
    n_calls = cfg.sampling.images_per_epoch // cfg.sampling.batch_size
    assert m["dropped_images"] == n_calls
    assert math.isfinite(m["policy/total"]) and math.isfinite(m["loss"])
    assert all(torch.isfinite(p).all() for p in trainable(engine.policy).values())
    restored = make_policy(cfg, build_pipeline(tiny_arch(), seed=1))
    load_checkpoint(tmp_path / "checkpoints" / "epoch-000001", restored)
    assert all(torch.isfinite(p).all() for p in trainable(restored).values())


def test_a_non_finite_gradient_skips_the_optimiser_step():
    cfg = small_config()
    engine = make_engine(cfg)
    before = trainable(engine.policy)
    engine.policy.ace.tokens.register_hook(lambda g: torch.full_like(g, float("nan")))
    m = engine.run_epoch()
    assert m["skipped_steps"] == cfg.optimizer_steps_per_epoch and math.isnan(m["grad_norm"])
    after = trainable(engine.policy)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_sinks_write_history_and_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_config(epochs=2)
    board = TensorBoard(tmp_path / "tb")
    engine = make_engine(cfg, sinks=[HistoryFile(tmp_path / "history.jsonl"), board])
    history = engine.run()
    board.grid(2, ["a", "b"], torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8))
    engine.close()
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"policy/total"' in lines[0]
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    assert {"policy/total", "anchor/consistency", "approx_kl", "clipfrac", "kl", "time/train"} <= set(
        tags["scalars"]
    )
    values = [e.value for e in acc.Scalars("policy/total")]
    assert [e.step for e in acc.Scalars("policy/total")] == [1, 2]
    assert values == pytest.approx([h["policy/total"] for h in history], rel=1e-6)
    assert {"grid/anchor", "grid/policy"} <= set(tags["images"])
    img = acc.Images("grid/policy")[0]
    assert (img.width, img.height) == (16, 8)  # two 8 px images side by side


def test_bad_setups_are_rejected():
    cfg = small_config(**{"ace.enabled": False, "lora.rank": 0})
    with pytest.raises(ValueError, match="nothing to train"):
        make_engine(cfg)
    cfg = small_config(max_report_tokens=2)
    policy = make_policy(cfg, build_pipeline(tiny_arch(), seed=1))
    kept = fitting_reports(policy, REPORTS, cfg.max_report_tokens)
    assert kept == []
    with pytest.raises(ValueError, match="no usable reports"):
        build(cfg, kept, backend(cfg), policy=policy)
    comparative = InProcessRewards(*random_scorers(0), weights=cfg.rewards.weights, rlcf=True)
    with pytest.raises(ValueError, match="forms the RLCF total itself"):
        build(cfg, REPORTS, comparative, policy=policy)
