"""cxrl.pretrain.fit: the one fit loop of the pretraining commands, against a hand-written loop."""

from __future__ import annotations

import pytest
import torch

from cxrl.pretrain import fit


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 3, generator=g)  # [N, 3]
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(20, generator=g)  # [N]
    model = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    return x, y, model


def _loss(model, x, y, g):
    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        noise = 0.01 * torch.randn(len(idx), 3, generator=g)  # draws from the batch generator too
        return (model(x[idx] + noise).squeeze(1) - y[idx]).pow(2).mean()

    return loss_fn


def test_fit_matches_the_hand_written_loop_it_replaced_step_for_step():
    # the loop every pretrain module used to repeat: count batches, then epochs of shuffled batches
    x, y, ref = _problem()
    g = torch.Generator().manual_seed(1)
    total = min(7, len(fit.shuffled_batches(20, 6, g)) * 3)
    opt, sched = fit.one_cycle(ref.parameters(), 0.1, 1e-4, total, pct_start=0.1)
    loss_fn, ref_losses, step = _loss(ref, x, y, g), [], 0
    for _ in range(3):
        for idx in fit.shuffled_batches(20, 6, g):
            loss = loss_fn(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ref_losses.append(loss.item())
            step += 1
            if step >= total:
                break
        if step >= total:
            break

    x, y, model = _problem()
    g = torch.Generator().manual_seed(1)
    total2 = fit.total_steps(20, 6, 3, 7, g)
    opt, sched = fit.one_cycle(model.parameters(), 0.1, 1e-4, total2, pct_start=0.1)
    result = fit.fit(_loss(model, x, y, g), fit.epoch_batches(20, 6, g, 3), opt, sched, total2)

    assert total2 == total == 7  # 3 batches per epoch (the partial one dropped), capped at 7
    assert result.steps == 7 and result.losses == ref_losses
    assert torch.equal(model.weight, ref.weight) and torch.equal(model.bias, ref.bias)
    # epochs of 3, 3 and 1 steps: one mean per started epoch
    assert result.epoch_losses == pytest.approx(
        [sum(ref_losses[:3]) / 3, sum(ref_losses[3:6]) / 3, ref_losses[6]]
    )
    assert result.losses[-1] < result.losses[0]  # it learns


def test_running_out_of_batches_ends_early():
    x, y, model = _problem()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = fit.fit(_loss(model, x, y, g), fit.epoch_batches(20, 6, g, 2), opt, None, max_steps=100)
    assert result.steps == 6 and len(result.epoch_losses) == 2


def test_clipping_warmup_hook_and_time_budget():
    x, y, model = _problem()
    y = y * 1000  # huge gradients
    g = torch.Generator().manual_seed(0)
    opt, sched = fit.warmup(model.parameters(), 0.5, 0.0, warmup_steps=4)
    seen = []

    def after_step(step: int) -> None:
        grads = [p.grad for p in model.parameters()]
        seen.append((step, torch.linalg.vector_norm(torch.stack([gr.norm() for gr in grads])).item()))
        seen[-1] += (opt.param_groups[0]["lr"],)

    batches = fit.random_batches(20, 4, g)
    result = fit.fit(_loss(model, x, y, g), batches, opt, sched, 5, clip_norm=1.0, after_step=after_step)
    assert result.steps == 5 and [s for s, _, _ in seen] == [0, 1, 2, 3, 4]
    assert all(norm <= 1.0 + 1e-5 for _, norm, _ in seen)  # clipped before the step
    # linear warm-up over 4 steps, then the full rate (the rate for the *next* step)
    assert [lr for _, _, lr in seen] == pytest.approx([0.25, 0.375, 0.5, 0.5, 0.5])

    before = [p.detach().clone() for p in model.parameters()]
    none = fit.fit(_loss(model, x, y, g), batches, opt, sched, 5, time_budget_s=-1.0)
    assert none.steps == 0 and none.losses == [] and none.epoch_losses == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
