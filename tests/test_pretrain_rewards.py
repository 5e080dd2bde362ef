"""`cxrl pretrain posture|diagnostic|clip` end to end on the tiny world (a few steps each), and its helpers."""

import json

import numpy as np
import pytest
import torch

from cxrl.cli import main
from cxrl.imaging import load_image
from cxrl.infra.hashing import sha256_file
from cxrl.labels import LABELS, XRV_PATHOLOGIES
from cxrl.pretrain.clip import (
    augment_images,
    drop_sentences,
    droppable_sentences,
    label_targets,
    mask_tokens,
    positives_matrix,
    sentences,
    shuffle_sentences,
)
from cxrl.pretrain.common import split_by_report
from cxrl.reports.labeler import label_findings
from cxrl.rewards.factory import load_consistency, load_diagnostic, load_posture
from cxrl.world.dataset import load_records


def run(model: str, tiny_world, out, *extra: str) -> dict:
    argv = [
        "pretrain",
        model,
        "--data",
        str(tiny_world),
        "--out",
        str(out),
        "--size",
        "32",
        "--epochs",
        "1",
        "--batch",
        "8",
        "--max-steps",
        "2",
        "--threads",
        "1",
        *extra,
    ]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith(f"cxrl pretrain {model} ")
    assert manifest["data_seed"] == 0 and manifest["training_seed"] == 0
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    return manifest


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(1))


@pytest.mark.e2e
def test_pretrain_posture_writes_a_loadable_checkpoint_with_quality(tiny_world, tmp_path, capsys):
    manifest = run("posture", tiny_world, tmp_path / "posture")
    q = manifest["quality"]
    assert {"spearman_r_align", "mae_sx", "mae_sy", "mae_tx", "mae_ty", "mae_theta"} <= set(q)
    assert q["n_test"] == 16 and q["steps"] == 2
    assert "posture spearman_r_align" in capsys.readouterr().out
    out = load_posture(tmp_path / "posture")(images())
    assert out.psi.shape == (3, 5) and torch.isfinite(out.r_align).all()


@pytest.mark.e2e
def test_pretrain_posture_compares_at_the_loss_size_and_the_net_sees_its_input_size(
    tiny_world, tmp_path, caplog
):
    manifest = run("posture", tiny_world, tmp_path / "posture", "--loss-size", "64")
    assert manifest["quality"]["loss_size"] == 64 and manifest["config"]["input_size"] == 32
    assert load_image(tmp_path / "posture" / "canonical.png").shape == (1, 64, 64)
    bad = [
        "pretrain",
        "posture",
        "--data",
        str(tiny_world),
        "--out",
        str(tmp_path / "bad"),
        "--size",
        "32",
        "--loss-size",
        "16",
        "--max-steps",
        "1",
        "--threads",
        "1",
    ]
    assert main(bad) == 2
    assert "--loss-size 16 is below --size 32" in caplog.text and not (tmp_path / "bad").exists()


@pytest.mark.e2e
def test_pretrain_diagnostic_calibrates_operating_points(tiny_world, tmp_path):
    manifest = run(
        "diagnostic", tiny_world, tmp_path / "diag", "--growth-rate", "4", "--block-config", "2", "2"
    )
    q = manifest["quality"]
    assert set(q["op_threshs"]) == set(XRV_PATHOLOGIES)
    assert q["n_fit"] + q["n_val"] == 48
    scorer = load_diagnostic(tmp_path / "diag", labeler=lambda text: {"Effusion": 1})
    stored = [t for t in q["op_threshs"].values() if t is not None]
    assert torch.allclose(
        scorer.model.op_threshs[~torch.isnan(scorer.model.op_threshs)], torch.tensor(stored), atol=1e-6
    )
    out = scorer(images(), ["a", "b", "c"])
    assert out.diag_probs.shape == (3, 18) and ((out.diag_acc >= 0) & (out.diag_acc <= 1)).all()


@pytest.mark.e2e
def test_pretrain_clip_saves_tokenizer_and_pair_auroc(tiny_world, tmp_path):
    manifest = run(
        "clip",
        tiny_world,
        tmp_path / "clip",
        "--widths",
        "4",
        "8",
        "8",
        "16",
        "--hidden",
        "16",
        "--proj-dim",
        "16",
        "--vocab-size",
        "300",
        "--positives",
        "labels",
        "--label-weight",
        "0.5",
        "--augment",
        "1",
        "--shuffle-sentences",
        "0.5",
        "--mask-tokens",
        "0.1",
        "--loss",
        "sigmoid",
        "--drop-sentences",
        "0.3",
    )
    assert 0.0 <= manifest["quality"]["matched_vs_mismatched_auroc"] <= 1.0
    assert "--positives labels" in manifest["command"] and "--label-weight 0.5" in manifest["command"]
    assert "--augment 1" in manifest["command"]
    assert "tokenizer.json" in manifest["files"] or "vocab.txt" in manifest["files"]
    reports = [r.report for r in load_records(tiny_world, "test")[:3]]
    out = load_consistency(tmp_path / "clip")(images(), reports)
    assert out.consistency.shape == (3,) and (out.consistency.abs() <= 1).all()


def test_validation_split_is_by_report_and_deterministic(tiny_world):
    records = load_records(tiny_world, "train")
    fit, val = split_by_report(records, 0.25, seed=0)
    assert (fit, val) == split_by_report(records, 0.25, seed=0)
    assert not {records[i].report for i in fit} & {records[i].report for i in val}
    assert sorted(fit + val) == list(range(len(records)))


def test_clip_label_targets_count_uncertain_as_half_and_negated_as_absent():
    class Rec:
        def __init__(self, labels):
            self.labels = labels

    y = label_targets([Rec({"Effusion": 1, "Edema": -1, "Pneumothorax": 0}), Rec({"No Finding": 1})])
    assert y.shape == (2, len(LABELS))
    col = {name: i for i, name in enumerate(LABELS)}
    assert y[0, col["Effusion"]] == 1.0 and y[0, col["Edema"]] == 0.5 and y[0, col["Pneumothorax"]] == 0.0
    assert y[0].sum() == 1.5 and y[1].sum() == 1.0 and y[1, col["No Finding"]] == 1.0


def test_clip_positives_are_equal_keys():
    keys = [(("No Finding", 1),), (("Effusion", 1),), (("No Finding", 1),)]
    expected = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    assert torch.equal(positives_matrix(keys), expected)


def test_clip_augmentation_keeps_range_and_is_seeded():
    x = torch.rand(6, 1, 24, 24)
    assert torch.equal(augment_images(x, torch.Generator().manual_seed(0), 0.0), x)
    a = augment_images(x, torch.Generator().manual_seed(0), 1.0)
    b = augment_images(x, torch.Generator().manual_seed(0), 1.0)
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert not torch.allclose(a, x, atol=1e-3)
    # a centred bright square moves at most the documented shift / scale / rotation, so it mostly stays
    sq = torch.zeros(4, 1, 40, 40)
    sq[:, :, 12:28, 12:28] = 0.5
    moved = augment_images(sq, torch.Generator().manual_seed(1), 1.0)
    assert (moved[:, :, 16:24, 16:24] > 0.3).float().mean() > 0.9


def test_clip_sentence_shuffle_keeps_the_sentences():
    text = "Heart size is normal. No effusion. Mild basilar atelectasis."
    rng = np.random.default_rng(0)
    outs = {shuffle_sentences(text, rng, 1.0) for _ in range(30)}
    assert len(outs) > 1
    for out in outs:
        assert sorted(s.rstrip(".") for s in out.split(". ")) == sorted(
            s.rstrip(".") for s in text.split(". ")
        )
    assert shuffle_sentences(text, rng, 0.0) == text
    assert shuffle_sentences("No acute disease.", rng, 1.0) == "No acute disease."


def test_clip_token_masking_spares_special_tokens_and_padding():
    ids = torch.tensor([[2, 35, 60, 54, 5, 3], [2, 57, 3, 0, 0, 0]])
    tokens = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    g = torch.Generator().manual_seed(0)
    assert torch.equal(mask_tokens(tokens, 4, [0, 1, 2, 3, 4], 0.0, g)["input_ids"], ids)
    out = mask_tokens(tokens, 4, [0, 1, 2, 3, 4], 1.0, g)["input_ids"]
    assert out.tolist() == [[2, 4, 4, 4, 4, 3], [2, 4, 3, 0, 0, 0]]
    assert torch.equal(tokens["input_ids"], ids)  # the input is not modified


def test_clip_sentence_dropout_keeps_the_findings():
    text = (
        "Heart size normal. No pleural effusion. Mild left basilar atelectasis. Clinical correlation advised."
    )
    droppable = droppable_sentences(text)
    # only the sentence that carries no finding may go; the others change the labels or the side
    assert droppable == [False, False, False, True]
    rng = np.random.default_rng(0)
    outs = {drop_sentences(text, droppable, rng, 1.0) for _ in range(5)}
    assert outs == {"Heart size normal. No pleural effusion. Mild left basilar atelectasis."}
    for out in outs:
        assert label_findings(out) == label_findings(text)
    assert drop_sentences(text, droppable, rng, 0.0) == text
    assert droppable_sentences("No acute disease.") == [False]
    # when every sentence may go, one stays
    assert len(sentences(drop_sentences("Stable. Unchanged.", [True, True], rng, 1.0))) == 1
