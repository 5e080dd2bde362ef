"""The default world's WordPiece learner: hand-computed merges and the same vocabulary in every process."""

import os
import subprocess
import sys

import pytest

from cxrl.models.text_tokenizer import SPECIAL_TOKENS
from cxrl.pretrain.vocab import learn_wordpiece_vocab, train_wordpiece

TEXTS = ["Ab ab AB.", "abc", "bc"]  # words: ab x3, abc, bc (lower-cased; "." split off)


def test_merges_hand_computed_with_ties_broken_by_the_pair():
    # alphabet: "##b", "##c", ".", "a", "b"; pair counts (a,##b)=4, then (ab,##c)=1 ties (b,##c)=1
    alphabet = ["##b", "##c", ".", "a", "b"]
    base = len(SPECIAL_TOKENS) + len(alphabet)
    assert learn_wordpiece_vocab(TEXTS, base + 3, min_frequency=1) == [
        *SPECIAL_TOKENS,
        *alphabet,
        "ab",
        "abc",
        "bc",
    ]
    assert learn_wordpiece_vocab(TEXTS, base + 2, min_frequency=1)[-2:] == ["ab", "abc"]
    assert learn_wordpiece_vocab(TEXTS, 100, min_frequency=2)[base:] == ["ab"]  # the others occur once


def test_tokenizer_uses_the_learnt_pieces():
    tok = train_wordpiece(TEXTS, 100, min_frequency=1)
    assert tok.tokenize("ABC bc abcbc") == ["abc", "bc", "abc", "##b", "##c"]
    assert tok.convert_tokens_to_ids("[PAD]") == 0


@pytest.mark.slow  # three fresh interpreters, each importing transformers
def test_same_vocabulary_in_every_process():
    script = (
        "from cxrl.pretrain.vocab import learn_wordpiece_vocab;"
        "texts = ['no acute disease. heart size normal.', 'small left pleural effusion.',"
        " 'mild cardiomegaly, no effusion or pneumothorax.', 'lungs are clear. no effusion.'] * 3;"
        "print('|'.join(learn_wordpiece_vocab(texts, 80)))"
    )
    outs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outs) == 1 and len(outs.pop().split("|")) == 80


def test_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="no room beyond"):
        learn_wordpiece_vocab(TEXTS, 5)
    with pytest.raises(ValueError, match="non-empty report corpus"):
        learn_wordpiece_vocab(["", "   "], 100)
