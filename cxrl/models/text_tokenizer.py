"""BERT WordPiece tokenizers for the CXR-CLIP text encoder, all from local files.

- ``load_tokenizer(dir)``: a local tokenizer directory (Bio_ClinicalBERT's ``vocab.txt`` +
  config, or one we saved); never touches the network.
- ``train_wordpiece(texts, vocab_size)``: a lower-cased WordPiece vocabulary learnt on a report
  corpus with the ``tokenizers`` library (the default world's tiny BERT).
- ``char_tokenizer()``: a fixed character-level vocabulary, for random-weight test models.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import BertWordPieceTokenizer
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


def train_wordpiece(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> BertTokenizer:
    """Learn a lower-cased WordPiece vocabulary on ``texts``; returns a transformers BertTokenizer."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True)


def char_tokenizer() -> BertTokenizer:
    """A fixed character-level WordPiece vocabulary (works on any English text)."""
    chars = string.ascii_lowercase + string.digits
    vocab = list(SPECIAL_TOKENS) + list(chars + string.punctuation) + ["##" + c for c in chars]
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
