"""BERT WordPiece tokenizers for the CXR-CLIP text encoder, all from local files.

- ``load_tokenizer(dir)``: a local tokenizer directory (Bio_ClinicalBERT's ``vocab.txt`` +
  config, or one we saved); never touches the network.
- a vocabulary learnt on a report corpus (the default world's tiny BERT) comes from
  :func:`cxrl.pretrain.vocab.train_wordpiece`;
- ``char_tokenizer()``: a fixed character-level vocabulary, for random-weight test models.
"""

from __future__ import annotations

import string
from pathlib import Path

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


def char_tokenizer() -> BertTokenizer:
    """A fixed character-level WordPiece vocabulary (works on any English text)."""
    chars = string.ascii_lowercase + string.digits
    vocab = list(SPECIAL_TOKENS) + list(chars + string.punctuation) + ["##" + c for c in chars]
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
