import pytest
import torch

from cxrl.rl.policy import AdaptiveConditionEmbeddings


def test_prepends_learnable_tokens():
    ace = AdaptiveConditionEmbeddings(3, 8)
    c_p = torch.randn(2, 5, 8)
    c = ace(c_p)
    assert c.shape == (2, 8, 8)
    torch.testing.assert_close(c[:, 3:], c_p)  # c = [c_s, c_p]
    torch.testing.assert_close(c[0, :3], ace.tokens)
    c.sum().backward()
    assert ace.tokens.grad is not None and torch.all(ace.tokens.grad == 2)  # one per batch item


def test_rejects_wrong_width_and_sizes():
    ace = AdaptiveConditionEmbeddings(3, 8)
    with pytest.raises(ValueError, match=r"\[B, M, 8\]"):
        ace(torch.randn(2, 5, 7))
    with pytest.raises(ValueError):
        AdaptiveConditionEmbeddings(0, 8)
