"""A CLIP-format BPE tokenizer trained on the report corpus (for the default-world generator).

The byte-level BPE follows CLIP's tokenizer (Radford et al. 2021): lower-cased, whitespace-collapsed
text is split into words, letters runs, single digits and punctuation runs; every word is mapped to
byte symbols and its last symbol carries the ``</w>`` end-of-word marker. The vocabulary is laid out
as CLIP's is: 256 byte symbols, the same with ``</w>``, one token per learned merge, then the two
special tokens. Saved as ``vocab.json`` + ``merges.txt`` so ``CLIPTokenizer.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import CLIPTokenizer

log = logging.getLogger(__name__)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE, in CLIP's order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    codes = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


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
