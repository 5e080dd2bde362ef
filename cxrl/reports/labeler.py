"""Rule-based radiology report labeler over the cxrl label vocabulary (cxrl.labels.LABELS).

Modelled on the CheXpert labeler's three stages (Irvin et al., AAAI 2019: mention
extraction, mention classification, mention aggregation), written here with regular
expressions instead of a dependency parse; the phrase data lives in ``phrases.py``.

Rules (the contract the world and the diagnostic reward rely on):

1. Text is lower-cased; IU de-identification tokens (``XXXX``) are removed. Sentences end at
   ``.`` (not a decimal point), ``;``, ``?``, ``!`` and line breaks; a sentence is cut into
   clauses at ``but``, ``however``, ``although``, ``which``, ``except``, ``otherwise``,
   ``there is`` ... (``phrases.CLAUSE_BREAKERS``). Negation and uncertainty never cross a
   clause.
2. A *mention* of a label is a match of one of its phrases that is not inside one of its
   *unmention* look-alikes ("granuloma" is not a Nodule, "subcutaneous emphysema" is not
   Emphysema, "pericardial effusion" is not Effusion).
3. Each mention is classified by the triggers of its clause:
   - a trigger inside the mention ("heart is possibly enlarged") applies to it;
   - otherwise the nearest trigger *before* it in the clause applies, unless a verb, "with"
     or a reporting word ("seen", "identified", ``phrases.SCOPE_STOPPERS``) stands between
     them ("no effusion, lungs are hyperexpanded" leaves Emphysema positive), nor does a
     new subject after a comma ("no effusion, the heart is enlarged"); a reporting word
     right after the trigger does not stop it ("no visualized pneumothorax"). Uncertainty
     adjectives ("possible", "borderline") also stop at a comma; negation runs through
     comma lists ("no pneumothorax, effusion, or consolidation");
   - a trigger *after* it applies when at most 6 words and no comma stand between
     ("pneumothorax is not seen", "pneumonia cannot be excluded", "infiltrate versus
     atelectasis");
   - uncertainty beats negation ("not excluded" is uncertain); neither gives positive.
   Phrases with a negation word that do not negate ("no change in the effusion") are masked.
   Two otherwise positive mentions joined by "or" ("atelectasis or scarring") are both
   uncertain: the report offers them as alternatives.
4. Statements that report a label as normal without a negation word ("heart size is
   normal", "sharp costophrenic angles", ``phrases.NORMAL_FINDINGS``) are negative mentions.
5. Mentions of one label combine across the report: positive beats uncertain beats
   negative (the CheXpert rule).
6. No hierarchy: a label is set only by its own mentions (pneumonia does not imply Lung
   Opacity, a nodule does not imply Lung Lesion), as in the CheXpert labeler.
7. "No Finding" is derived from the 18 pathologies (not Support Devices): 0 when one is
   positive; -1 when none is positive but one is uncertain; 1 when none is positive or
   uncertain and the report states normality ("no acute cardiopulmonary abnormality",
   "lungs are clear", ``phrases.NORMAL_REPORT``) or negates a pathology; absent otherwise.
8. Laterality of a finding: side words ("left", "bibasilar", "lingular" = left, ...) between
   the previous mention of the clause and the mention, or inside it; failing that, a side
   word after it introduced by a preposition ("in the right lung base") or "bilaterally".
   A mention still without a side takes the side of the previous mention of its clause
   when no comma stands between ("left basilar infiltrate versus atelectasis", "left
   effusion and atelectasis"). The sides of the mentions that gave the final value are
   combined: left and right make bilateral; none gives "unspecified". Cardiomegaly,
   Enlarged Cardiomediastinum, Hernia and No Finding are always "unspecified".
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cxrl.labels import LABELS, NO_FINDING, XRV_PATHOLOGIES
from cxrl.reports import phrases as P

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
_PRIORITY = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}  # higher wins when mentions combine
_POST_WINDOW_WORDS = 6
_PRE_KINDS = ("pre_unc", "pre_adj", "pre_neg")
_UNCERTAIN_KINDS = {"pre_unc", "pre_adj", "post_unc"}
_PREPOSITIONS = frozenset(
    "in at of within involving along over on into to throughout overlying projecting from near".split()
)


@dataclass(frozen=True)
class Finding:
    """One label's value in a report and the side it was reported on."""

    value: int  # 1 positive, 0 negative, -1 uncertain
    laterality: str  # one of cxrl.labels.LATERALITIES


@dataclass(frozen=True)
class _Mention:
    label: str
    start: int
    end: int
    value: int
    side: str | None  # "left" / "right" / "bilateral" / None


def _alternation(fragments: Iterable[str]) -> re.Pattern[str]:
    """Compile fragments into one pattern that never matches inside a longer word."""
    body = "|".join(f"(?:{f})" for f in fragments)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])")


def clean(text: str) -> str:
    """Lower-case, drop IU de-identification tokens (XXXX), collapse spaces and tabs."""
    text = _DEID.sub(" ", text.lower())
    return _SPACES.sub(" ", text).strip()


_DEID = re.compile(r"\bx{2,}\b")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[;?!\n]")
_CLAUSE = _alternation(P.CLAUSE_BREAKERS)
_STOPPER = _alternation(P.SCOPE_STOPPERS)
_WORD = re.compile(r"[a-z0-9/'-]+")
_COMMA = re.compile(r"[,:]")
_ALTERNATIVE = re.compile(r"\s*or\s+(?:[a-z-]+\s+){0,2}")


class ReportLabeler:
    """Compiled labeler. Call it on a report; it is stateless and safe to share."""

    def __init__(self) -> None:
        self._mentions = {label: _alternation(P.MENTIONS[label]) for label in P.MENTIONS}
        self._unmentions = {label: _alternation(frags) for label, frags in P.UNMENTIONS.items()}
        self._normal_findings = {label: _alternation(frags) for label, frags in P.NORMAL_FINDINGS.items()}
        self._normal_report = _alternation(P.NORMAL_REPORT)
        self._pre_neg = _alternation(P.PRE_NEGATION)
        self._post_neg = _alternation(P.POST_NEGATION)
        self._pre_unc = _alternation(P.PRE_UNCERTAINTY)
        self._pre_unc_adj = _alternation(P.PRE_UNCERTAINTY_ADJ)
        self._post_unc = _alternation(P.POST_UNCERTAINTY)
        self._pseudo = _alternation(P.PSEUDO_NEGATION)
        self._sides = [
            (_alternation(P.BILATERAL), "bilateral"),
            (_alternation(P.LEFT), "left"),
            (_alternation(P.RIGHT), "right"),
        ]
        missing = set(LABELS) - set(P.MENTIONS) - {NO_FINDING}
        if missing:
            raise ValueError(f"phrases.MENTIONS lacks labels {sorted(missing)}")

    # ------------------------------------------------------------ public API
    def __call__(self, text: str) -> dict[str, int]:
        """Label one report: label -> 1 / 0 / -1, in LABELS order; unmentioned labels absent."""
        return {label: f.value for label, f in self.findings(text).items()}

    def findings(self, text: str) -> dict[str, Finding]:
        """Label one report with the laterality of each finding."""
        if not isinstance(text, str):
            raise ValueError(f"a report must be a str, got {type(text).__name__}; decode bytes first")
        doc = clean(text)
        if not doc:
            return {}
        mentions = self._classified_mentions(doc)
        by_label: dict[str, list[_Mention]] = {}
        for m in mentions:
            by_label.setdefault(m.label, []).append(m)
        result: dict[str, Finding] = {}
        for label, items in by_label.items():
            value = max((m.value for m in items), key=_PRIORITY.__getitem__)
            sides = {m.side for m in items if m.value == value and m.side}
            result[label] = Finding(value, _combine_sides(sides, label))
        no_finding = self._no_finding(doc, result)
        if no_finding is not None:
            result[NO_FINDING] = Finding(no_finding, "unspecified")
        return {label: result[label] for label in LABELS if label in result}

    def batch(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """Label many reports, in input order."""
        return [self(t) for t in texts]

    # ------------------------------------------------------------ stages
    def _classified_mentions(self, doc: str) -> list[_Mention]:
        bounds = self._clause_bounds(doc)
        spans = self._raw_mentions(doc)
        if not spans:
            return []
        triggers = self._triggers(doc)
        side_terms = [(m.start(), m.end(), side) for rx, side in self._sides for m in rx.finditer(doc)]
        side_terms = _drop_nested(side_terms)
        spans.sort(key=lambda s: (s[1], s[2]))
        out = []
        for label, start, end, fixed in spans:
            clause = bisect.bisect_right(bounds, start)
            lo = bounds[clause - 1] if clause else 0
            hi = bounds[clause] if clause < len(bounds) else len(doc)
            value = fixed if fixed is not None else self._value(doc, start, end, lo, hi, triggers)
            before = [m for m in out if lo < m.end <= start]
            prev = max(before, key=lambda m: m.end) if before else None
            if (
                value == POSITIVE
                and prev is not None
                and prev.value == POSITIVE
                and _ALTERNATIVE.fullmatch(doc, prev.end, start)
            ):
                # "atelectasis or scarring": two positive readings offered as alternatives
                value = UNCERTAIN
                out = [
                    replace(m, value=UNCERTAIN) if (m.start, m.end) == (prev.start, prev.end) else m
                    for m in out
                ]
            side = None
            if label not in P.NON_LATERAL:
                side = _side(doc, start, end, prev.end if prev else lo, hi, side_terms)
                if side is None and prev is not None and doc.find(",", prev.end, start) < 0:
                    side = prev.side  # "left basilar infiltrate versus atelectasis"
            out.append(_Mention(label, start, end, value, side))
        return out

    def _raw_mentions(self, doc: str) -> list[tuple[str, int, int, int | None]]:
        """(label, start, end, fixed value or None) for every mention and normal statement."""
        spans: list[tuple[str, int, int, int | None]] = []
        for label, rx in self._mentions.items():
            found = [(m.start(), m.end()) for m in rx.finditer(doc)]
            if not found:
                continue
            unrx = self._unmentions.get(label)
            if unrx is not None:
                blocked = [(m.start(), m.end()) for m in unrx.finditer(doc)]
                found = [(s, e) for s, e in found if not any(bs <= s and e <= be for bs, be in blocked)]
            spans.extend((label, s, e, None) for s, e in found)
        for label, rx in self._normal_findings.items():
            spans.extend((label, m.start(), m.end(), NEGATIVE) for m in rx.finditer(doc))
        return spans

    def _clause_bounds(self, doc: str) -> list[int]:
        cuts = [m.end() for m in _SENTENCE_END.finditer(doc)]
        cuts += [m.start() for m in _CLAUSE.finditer(doc)]
        return sorted(set(cuts))

    def _triggers(self, doc: str) -> dict[str, list[tuple[int, int]]]:
        pseudo = [(m.start(), m.end()) for m in self._pseudo.finditer(doc)]
        found = {
            "pre_unc": [(m.start(), m.end()) for m in self._pre_unc.finditer(doc)],
            "pre_adj": [(m.start(), m.end()) for m in self._pre_unc_adj.finditer(doc)],
            "post_unc": [(m.start(), m.end()) for m in self._post_unc.finditer(doc)],
        }
        uncertain = found["pre_unc"] + found["pre_adj"] + found["post_unc"]
        for kind, rx in (("pre_neg", self._pre_neg), ("post_neg", self._post_neg)):
            spans = [(m.start(), m.end()) for m in rx.finditer(doc)]
            found[kind] = [s for s in spans if not _overlaps(s, pseudo) and not _overlaps(s, uncertain)]
        return found

    def _value(
        self, doc: str, start: int, end: int, lo: int, hi: int, triggers: dict[str, list[tuple[int, int]]]
    ) -> int:
        # Triggers inside the mention decide first ("the heart is possibly enlarged").
        inside = {k for k in _PRE_KINDS for s, e in triggers[k] if start <= s and e <= end}
        if inside & _UNCERTAIN_KINDS:
            return UNCERTAIN
        if inside:
            return NEGATIVE
        pre = None  # (end, kind) of the nearest pre-trigger in scope
        for kind in _PRE_KINDS:
            for s, e in triggers[kind]:
                if lo <= s and e <= start and (pre is None or e > pre[0]):
                    if _stopped(doc, e, start) or (kind == "pre_adj" and doc.find(",", e, start) >= 0):
                        continue
                    pre = (e, kind)
        comma = doc.find(",", end, hi)
        post_hi = hi if comma < 0 else comma
        post_kinds = set()
        for kind in ("post_unc", "post_neg"):
            for s, e in triggers[kind]:
                if end <= s and e <= post_hi and len(_WORD.findall(doc, end, s)) <= _POST_WINDOW_WORDS:
                    post_kinds.add(kind)
        if (pre and pre[1] in _UNCERTAIN_KINDS) or "post_unc" in post_kinds:
            return UNCERTAIN
        if pre or "post_neg" in post_kinds:
            return NEGATIVE
        return POSITIVE

    def _no_finding(self, doc: str, found: dict[str, Finding]) -> int | None:
        values = [found[label].value for label in XRV_PATHOLOGIES if label in found]
        if POSITIVE in values:
            return NEGATIVE
        if UNCERTAIN in values:
            return UNCERTAIN
        if NEGATIVE in values or self._normal_report.search(doc):
            return POSITIVE
        return None


def _stopped(doc: str, begin: int, end: int) -> bool:
    """Whether a scope stopper stands in doc[begin:end], not counting one right after the trigger
    ("no visualized pneumothorax" stays negated)."""
    for m in _STOPPER.finditer(doc, begin, end):
        if doc[begin : m.start()].strip():
            return True
    return False


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in others)


def _drop_nested(terms: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Keep the longest side terms ("left greater than right" over its "left" and "right")."""
    terms.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    kept: list[tuple[int, int, str]] = []
    for t in terms:
        if kept and t[0] < kept[-1][1]:
            continue
        kept.append(t)
    return kept


def _side(
    doc: str, start: int, end: int, prev_end: int, hi: int, terms: list[tuple[int, int, str]]
) -> str | None:
    """The side words that qualify the mention [start, end) (rule 8 of the module docstring)."""
    near = {side for s, e, side in terms if prev_end <= s and e <= end}
    if near:
        return _combine_sides(near, "") if len(near) > 1 else next(iter(near))
    comma = _COMMA.search(doc, end, hi)
    stop = comma.start() if comma else hi
    for s, e, side in terms:
        if end <= s and e <= stop:
            words = _WORD.findall(doc, end, s)
            bilateral_after = side == "bilateral" and len(words) <= 2
            if len(words) <= _POST_WINDOW_WORDS and (bilateral_after or _PREPOSITIONS.intersection(words)):
                return side
            return None
    return None


def _combine_sides(sides: set[str | None], label: str) -> str:
    if label in P.NON_LATERAL or not sides:
        return "unspecified"
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides))  # exactly one of left / right


_DEFAULT: ReportLabeler | None = None


def default_labeler() -> ReportLabeler:
    """The shared compiled labeler (built on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ReportLabeler()
    return _DEFAULT


def label_report(text: str) -> dict[str, int]:
    """label -> 1 / 0 / -1 over cxrl.labels.LABELS; labels the report does not mention are absent."""
    return default_labeler()(text)


def label_findings(text: str) -> dict[str, Finding]:
    """label -> Finding(value, laterality) over cxrl.labels.LABELS."""
    return default_labeler().findings(text)


__all__ = ["Finding", "ReportLabeler", "clean", "default_labeler", "label_findings", "label_report"]


def labeler_version() -> str:
    """sha256 (16 hex) of the labeler's rules and phrase data: changes whenever its labels could.

    Cache keys of anything computed from report labels (the diagnostic reward's accuracy) include it.
    """
    h = hashlib.sha256()
    for name in ("labeler.py", "phrases.py", "sections.py"):
        h.update(name.encode() + (Path(__file__).resolve().parent / name).read_bytes())
    return h.hexdigest()[:16]
