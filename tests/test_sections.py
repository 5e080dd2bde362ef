from cxrl.reports.sections import (
    MAX_TOKENS,
    clean_deid,
    count_tokens,
    impression,
    split_sections,
    within_limit,
)


def test_count_tokens_words_and_punctuation():
    assert count_tokens("No acute disease, 2 views.") == 7
    assert count_tokens("") == 0
    assert count_tokens("  left-sided  ") == 3  # left / - / sided


def test_clean_deid_drops_iu_and_mimic_placeholders():
    assert clean_deid("No XXXX abnormality.") == "No abnormality."
    assert clean_deid("Stable since XXXX-XXXX, XXXX.") == "Stable since."
    assert (
        clean_deid("Compared to ___ there is a small effusion.") == "Compared to there is a small effusion."
    )
    assert clean_deid("XXXX") == ""
    # single X or mixed case words are not placeholders
    assert clean_deid("X-ray of Xavier") == "X-ray of Xavier"


def test_impression_from_iu_fields():
    fields = {"FINDINGS": "Lungs are clear.", "IMPRESSION": "Normal chest XXXX.", "indication": None}
    assert impression(fields) == "Normal chest."
    assert impression({"FINDINGS": "Lungs are clear."}) == ""
    assert impression({"FINDINGS": "Lungs are clear."}, fallback_findings=True) == "Lungs are clear."


def test_impression_from_free_text():
    text = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " FINDINGS: \n\n The heart is mildly enlarged.\n\n"
        " IMPRESSION: \n\n Mild cardiomegaly.  No ___ effusion.\n"
    )
    assert impression(text) == "Mild cardiomegaly. No effusion."
    secs = split_sections(text)
    assert secs["FINDINGS"] == "The heart is mildly enlarged."
    assert impression("no headers at all") == ""
    assert impression("INDICATION: cough.\nFINDINGS AND IMPRESSION: Clear lungs.\n") == "Clear lungs."
    assert impression("FINDINGS: Clear.\nCONCLUSION: Normal study.\n") == "Normal study."


def test_within_limit():
    assert within_limit("a " * MAX_TOKENS)
    assert not within_limit("a " * (MAX_TOKENS + 1))
    assert not within_limit("")


def test_impression_rejects_other_types():
    import pytest

    with pytest.raises(ValueError, match="report text or a mapping"):
        impression(42)  # type: ignore[arg-type]
