"""Report sections: the impression, de-identification clean-up, and the token limit.

The CXRL paper conditions the generator on the *impression* section of a report and
keeps reports of at most M = 74 tokens (its dataset rule, Sec. 3), so that the report and the
N = 3 learnable condition tokens of ACE fit the text encoder's 77 positions (N + M = 77). This
module applies that dataset rule in word tokens (below); the condition's length itself is
enforced where the report is tokenised for the generator (``cxrl.rl.policy.Policy``:
``c_p`` is the first 77 - N encoder positions, the report truncated to fit with its EOS kept),
because a word can be several of the generator's BPE tokens. This module is the single place
that extracts and measures the report text, for the Indiana University (IU) reports of the
default world and for MIMIC-CXR free-text reports alike.

Token rule (``count_tokens``): a token is a maximal run of word characters
(letters, digits, underscore, i.e. regex ``\\w+``) or a single punctuation character
(``[^\\w\\s]``). ``"No acute disease, 2 views."`` has 7 tokens: No / acute / disease / , / 2 /
views / . (whitespace never counts).

De-identification (``clean_deid``): IU reports replace names, dates and some words
with runs of ``X`` (``XXXX``, ``XXXX-XXXX``); MIMIC uses ``___``. Both are dropped,
together with punctuation left dangling, and whitespace is collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_TOKENS = 74

_TOKEN = re.compile(r"\w+|[^\w\s]")
# Runs of 2+ capital X (IU), optionally hyphen/slash-joined, and MIMIC's ___ placeholders.
_DEID = re.compile(r"\b(?:X{2,}(?:[-/]X{2,})*)\b|_{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")
_REPEATED_PUNCT = re.compile(r"([,;:])\s*(?=[,;:.])")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_SPACES = re.compile(r"\s+")
# Section headers in free-text reports: a line starting with words in capitals and a colon.
_HEADER = re.compile(r"(?m)^[ \t]*([A-Z][A-Z /&_-]{2,40}):")


def count_tokens(text: str) -> int:
    """Number of word/punctuation tokens in ``text`` (see the module docstring for the rule)."""
    return len(_TOKEN.findall(text))


def clean_deid(text: str) -> str:
    """Drop de-identification tokens (IU ``XXXX``, MIMIC ``___``) and tidy the punctuation left behind."""
    out = _DEID.sub(" ", text)
    out = _EMPTY_PARENS.sub(" ", out)
    out = _SPACES.sub(" ", out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    out = _REPEATED_PUNCT.sub("", out)
    out = out.strip(" ,;:")
    return out.strip()


def split_sections(report: str) -> dict[str, str]:
    """Free-text report -> {HEADER: body} for headers like ``IMPRESSION:`` at line starts.

    Text before the first header is returned under ``""``. Headers are upper-cased and
    stripped of spaces at the ends.
    """
    sections: dict[str, str] = {}
    matches = list(_HEADER.finditer(report))
    if not matches:
        return {"": report.strip()}
    if report[: matches[0].start()].strip():
        sections[""] = report[: matches[0].start()].strip()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        sections[m.group(1).strip().upper()] = report[m.end() : end].strip()
    return sections


def impression(report: str | Mapping[str, str | None], fallback_findings: bool = False) -> str:
    """The cleaned impression section of a report, or ``""`` when it has none.

    ``report`` is either free text with section headers (MIMIC-CXR ``.txt`` files:
    ``IMPRESSION:`` at a line start) or a mapping of section label -> text (the
    ``AbstractText Label=...`` fields of an IU XML report). Without an IMPRESSION section,
    a section whose header contains IMPRESSION (``FINDINGS AND IMPRESSION``) or a
    CONCLUSION section is used. With ``fallback_findings``
    a report without an impression yields its cleaned FINDINGS section instead.
    """
    if isinstance(report, Mapping):
        fields = {str(k).strip().upper(): (v or "") for k, v in report.items()}
    elif isinstance(report, str):
        fields = split_sections(report)
    else:
        raise ValueError(
            f"impression() takes report text or a mapping of sections, got {type(report).__name__}"
        )
    text = fields.get("IMPRESSION", "")
    if not text.strip():  # "FINDINGS AND IMPRESSION:", "IMPRESSIONS:", then "CONCLUSION:"
        merged = [v for k, v in fields.items() if "IMPRESSION" in k and v.strip()]
        text = merged[0] if merged else fields.get("CONCLUSION", "")
    if not text.strip() and fallback_findings:
        text = fields.get("FINDINGS", "")
    return clean_deid(text)


def within_limit(text: str, max_tokens: int = MAX_TOKENS) -> bool:
    """True when ``text`` is non-empty and has at most ``max_tokens`` tokens."""
    n = count_tokens(text)
    return 0 < n <= max_tokens
