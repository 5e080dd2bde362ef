"""Vocabularies learnt on the report corpus by ``cxrl pretrain``: the generator's CLIP-format BPE
tokenizer (:func:`train_tokenizer`, layout in :mod:`cxrl.models.generator_tokenizer`) and the
CXR-CLIP text encoder's WordPiece vocabulary (:func:`train_wordpiece`, our own deterministic
learner: the same texts give the same vocabulary, with the same ids, in every process).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.trainers import BpeTrainer
from transformers import BertTokenizer, CLIPTokenizer

from cxrl.models.generator_tokenizer import BOS, CLIP_SPLIT, EOS, byte_symbols
from cxrl.models.text_tokenizer import SPECIAL_TOKENS

log = logging.getLogger(__name__)


def train_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2048, max_length: int = 77
) -> CLIPTokenizer:
    """Learn BPE merges on ``texts`` and write a CLIP tokenizer (vocab.json, merges.txt) to ``out_dir``.

    ``vocab_size`` counts everything (514 byte symbols + merges + 2 specials); it must exceed 516.
    """
    base = 2 * 256 + 2
    if vocab_size <= base:
        raise ValueError(f"vocab_size must exceed {base} (byte symbols and specials), got {vocab_size}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no non-empty texts to train the tokenizer on")
    tok = Tokenizer(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[],
        initial_alphabet=byte_symbols(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    merges = merges[: vocab_size - base]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:  # a merge can reproduce a byte symbol; keep the first id
        vocab.setdefault(token, len(vocab))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    with open(out / "merges.txt", "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
        fh.writelines(f"{a} {b}\n" for a, b in merges)
    log.info("tokenizer: %d merges, vocab %d, written to %s", len(merges), len(vocab), out)
    return CLIPTokenizer.from_pretrained(str(out), model_max_length=max_length)


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
