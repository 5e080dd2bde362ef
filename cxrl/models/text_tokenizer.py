"""BERT WordPiece tokenizers for the CXR-CLIP text encoder, all from local files.

- ``load_tokenizer(dir)``: a local tokenizer directory (Bio_ClinicalBERT's ``vocab.txt`` +
  config, or one we saved); never touches the network.
- ``train_wordpiece(texts, vocab_size)``: a lower-cased WordPiece vocabulary learnt on a report
  corpus (the default world's tiny BERT), by our own deterministic learner: the same texts give
  the same vocabulary, with the same ids, in every process.
- ``char_tokenizer()``: a fixed character-level vocabulary, for random-weight test models.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a BERT tokenizer saved in ``directory`` (local files only)."""
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(
            f"tokenizer directory {path} does not exist; give a local Bio_ClinicalBERT directory"
        )
    if not any((path / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        raise ValueError(f"{path} holds no vocab.txt or tokenizer.json; it is not a BERT tokenizer directory")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _pieces(word: str) -> tuple[str, ...]:
    """A word as its characters, WordPiece style: the first bare, the rest with the ``##`` prefix."""
    return (word[0],) + tuple("##" + c for c in word[1:])


def _join(a: str, b: str) -> str:
    return a + b.removeprefix("##")


def learn_wordpiece_vocab(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> list[str]:
    """Vocabulary (in id order) learnt by frequency-ordered merges, ties broken by the pair itself.

    Texts are normalised and split into words the way BERT does (lower case, accents stripped,
    punctuation split off: ``tokenizers``' ``BertNormalizer`` and ``BertPreTokenizer``, both
    deterministic). The vocabulary is the special tokens, then every character seen (as the
    first character of a word and as a ``##`` continuation, sorted), then merged pieces: at each
    step the adjacent pair with the highest corpus count is merged, the lexicographically first
    pair among equals, until ``vocab_size`` entries or no pair occurs ``min_frequency`` times.
    ``tokenizers``' own WordPiece trainer breaks those ties in hash-map order, which changes from
    process to process, so the same command gave different vocabularies (and checkpoints).
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens"
        )
    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    if not counts:
        raise ValueError("no words to learn a vocabulary from; give a non-empty report corpus")
    words = sorted(counts)
    freq = [counts[w] for w in words]
    split = [list(_pieces(w)) for w in words]
    vocab = list(SPECIAL_TOKENS) + sorted({p for pieces in split for p in pieces} - set(SPECIAL_TOKENS))
    known = set(vocab)
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, pieces in enumerate(split):
        for pair in zip(pieces, pieces[1:], strict=False):
            pairs[pair] += freq[i]
            where.setdefault(pair, set()).add(i)
    while len(vocab) < vocab_size and pairs:
        best, n = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if n < min_frequency:
            break
        merged = _join(*best)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        for i in sorted(where.pop(best, ())):
            old = split[i]
            for pair in zip(old, old[1:], strict=False):
                pairs[pair] -= freq[i]
                if pairs[pair] <= 0:
                    del pairs[pair]
            new, k = [], 0
            while k < len(old):
                if k + 1 < len(old) and (old[k], old[k + 1]) == best:
                    new.append(merged)
                    k += 2
                else:
                    new.append(old[k])
                    k += 1
            split[i] = new
            for pair in zip(new, new[1:], strict=False):
                pairs[pair] += freq[i]
                where.setdefault(pair, set()).add(i)
        pairs.pop(best, None)
    return vocab


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> BertTokenizer:
    """Learn a lower-cased WordPiece vocabulary on ``texts``; returns a transformers BertTokenizer."""
    vocab = learn_wordpiece_vocab(texts, vocab_size, min_frequency)
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)


def char_tokenizer() -> BertTokenizer:
    """A fixed character-level WordPiece vocabulary (works on any English text)."""
    chars = string.ascii_lowercase + string.digits
    vocab = list(SPECIAL_TOKENS) + list(chars + string.punctuation) + ["##" + c for c in chars]
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
