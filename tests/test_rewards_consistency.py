import pytest
import torch

from cxrl.models.cxr_clip import CXRClip, tiny_config
from cxrl.models.text_tokenizer import char_tokenizer
from cxrl.rewards.consistency import ConsistencyScorer
from cxrl.rewards.types import ModelInfo


def tiny_scorer() -> ConsistencyScorer:
    torch.manual_seed(0)
    tok = char_tokenizer()
    cfg = tiny_config(len(tok), 256, 8)
    return ConsistencyScorer(CXRClip(cfg), tok, ModelInfo("clip", "t", "0"))


def test_consistency_is_the_cosine_of_the_pair_embeddings():
    scorer = tiny_scorer()
    images = torch.rand(2, 1, 64, 64)
    reports = ["no acute disease.", "small left effusion."]
    out = scorer(images, reports).consistency
    with torch.no_grad():
        img = scorer.model.encode_image(images)
        tokens = scorer.tokenizer(reports, padding="longest", return_tensors="pt")
        txt = scorer.model.encode_text(dict(tokens))
    assert torch.allclose(out, (img * txt).sum(-1), atol=1e-5)
    assert ((out >= -1) & (out <= 1)).all()


def test_text_cache_gives_the_same_scores_and_batches_are_independent():
    scorer = tiny_scorer()
    images = torch.rand(3, 1, 32, 32)
    reports = ["a", "heart is enlarged", "a"]
    first = scorer(images, reports).consistency
    assert len(scorer._text) == 2
    assert torch.allclose(scorer(images, reports).consistency, first)
    assert torch.allclose(scorer(images[1:2], reports[1:2]).consistency, first[1:2], atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        scorer(images[:1], [" "])


def test_text_cache_is_bounded_in_bytes_and_keeps_giving_the_same_embeddings(monkeypatch):
    from cxrl.rewards import consistency

    monkeypatch.setattr(consistency, "TEXT_CACHE_BYTES", 20_000)
    scorer = tiny_scorer()
    first = scorer.text_embeddings(["effusion " * 3])
    for i in range(40):  # 40 distinct ~1 kB reports: far more than 20 kB
        scorer.text_embeddings([f"report {i} " + "x" * 1000])
        assert scorer._text_bytes <= 20_000
        assert scorer._text_bytes == sum(len(k.encode()) + v.numel() * 4 for k, v in scorer._text.items())
    assert "effusion " * 3 not in scorer._text  # evicted, oldest first
    torch.testing.assert_close(scorer.text_embeddings(["effusion " * 3]), first)  # recomputed the same
