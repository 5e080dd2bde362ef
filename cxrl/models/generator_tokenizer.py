"""The CLIP-format BPE tokenizer of the default-world generator: its byte symbols, split and specials.

The byte-level BPE follows CLIP's tokenizer (Radford et al. 2021): lower-cased, whitespace-collapsed
text is split into words, letters runs, single digits and punctuation runs; every word is mapped to
byte symbols and its last symbol carries the ``</w>`` end-of-word marker. The vocabulary is laid out
as CLIP's is: 256 byte symbols, the same with ``</w>``, one token per learned merge, then the two
special tokens. Saved as ``vocab.json`` + ``merges.txt`` so ``CLIPTokenizer.from_pretrained`` loads it.
The merges are learnt on the report corpus by :func:`cxrl.pretrain.vocab.train_tokenizer`.
"""

from __future__ import annotations

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
