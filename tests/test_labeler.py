"""The report labeler: exact outputs for sentences written for these tests (not copied from any corpus).

Each case is (report, expected label dict). "No Finding" follows rule 7 of the labeler:
0 when a pathology is positive, -1 when one is only uncertain, 1 when none is positive or
uncertain and the report states normality or negates a pathology.
"""

from __future__ import annotations

import pytest

from cxrl.labels import LABELS, LATERALITIES
from cxrl.reports.labeler import Finding, ReportLabeler, clean, label_findings, label_report

NF = "No Finding"

# ------------------------------------------------------------------ per label: positive / negated / uncertain
PER_LABEL = [
    # Atelectasis
    ("Bibasilar atelectasis.", {"Atelectasis": 1, NF: 0}),
    ("Subsegmental atelectatic changes in the lingula.", {"Atelectasis": 1, NF: 0}),
    ("Right middle lobe collapse.", {"Atelectasis": 1, NF: 0}),
    ("There is no atelectasis.", {"Atelectasis": 0, NF: 1}),
    ("Opacity likely representing atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1, NF: 0}),
    # Consolidation
    ("Dense consolidation of the right lower lobe.", {"Consolidation": 1, NF: 0}),
    ("No focal consolidation.", {"Consolidation": 0, NF: 1}),
    ("Questionable consolidation at the left base.", {"Consolidation": -1, NF: -1}),
    # Infiltration
    ("Patchy infiltrates in both lungs.", {"Infiltration": 1, NF: 0}),
    ("No infiltrate is seen.", {"Infiltration": 0, NF: 1}),
    ("Possible early infiltrate in the right base.", {"Infiltration": -1, NF: -1}),
    ("Increased interstitial markings.", {"Infiltration": 1, NF: 0}),
    # Pneumothorax
    ("Small right apical pneumothorax.", {"Pneumothorax": 1, NF: 0}),
    ("No pneumothoraces.", {"Pneumothorax": 0, NF: 1}),
    ("Tiny left pneumothorax cannot be excluded.", {"Pneumothorax": -1, NF: -1}),
    ("No pleural air collections.", {"Pneumothorax": 0, NF: 1}),
    # Edema
    ("Mild interstitial pulmonary edema.", {"Edema": 1, NF: 0}),
    ("No overt pulmonary edema.", {"Edema": 0, NF: 1}),
    ("Findings may represent mild edema.", {"Edema": -1, NF: -1}),
    ("Pulmonary vascular congestion.", {"Edema": 1, NF: 0}),
    ("Findings consistent with congestive heart failure.", {"Edema": 1, NF: 0}),
    # Emphysema
    ("Emphysematous changes in the upper lobes.", {"Emphysema": 1, NF: 0}),
    ("Hyperexpanded lungs.", {"Emphysema": 1, NF: 0}),
    ("Lungs are hyperinflated, consistent with COPD.", {"Emphysema": 1, NF: 0}),
    ("No emphysema.", {"Emphysema": 0, NF: 1}),
    ("Hyperlucent lungs suggestive of emphysema.", {"Emphysema": -1, NF: -1}),
    ("Subcutaneous emphysema in the left chest wall.", {}),
    # Fibrosis
    ("Bibasilar pulmonary fibrosis.", {"Fibrosis": 1, NF: 0}),
    ("Apical scarring.", {"Fibrosis": 1, NF: 0}),
    ("No evidence of fibrosis.", {"Fibrosis": 0, NF: 1}),
    ("Reticular changes which could represent early fibrosis.", {"Infiltration": 1, "Fibrosis": -1, NF: 0}),
    # Effusion
    ("Small left pleural effusion.", {"Effusion": 1, NF: 0}),
    ("Blunting of the left costophrenic angle.", {"Effusion": 1, NF: 0}),
    ("Blunted right costophrenic angle.", {"Effusion": 1, NF: 0}),
    ("No pleural effusions.", {"Effusion": 0, NF: 1}),
    ("Costophrenic angles are sharp.", {"Effusion": 0, NF: 1}),
    ("Trace effusion versus pleural thickening.", {"Effusion": -1, "Pleural_Thickening": -1, NF: -1}),
    ("Small pericardial effusion.", {}),
    # Pneumonia
    ("Right lower lobe pneumonia.", {"Pneumonia": 1, NF: 0}),
    ("No evidence of pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("Opacity concerning for pneumonia.", {"Lung Opacity": 1, "Pneumonia": -1, NF: 0}),
    ("Infection is not excluded.", {"Pneumonia": -1, NF: -1}),
    ("Negative for pneumonia.", {"Pneumonia": 0, NF: 1}),
    # Pleural thickening
    ("Right apical pleural thickening.", {"Pleural_Thickening": 1, NF: 0}),
    ("Calcified pleural plaques.", {"Pleural_Thickening": 1, NF: 0}),
    ("No pleural thickening.", {"Pleural_Thickening": 0, NF: 1}),
    ("Possible pleural thickening at the right base.", {"Pleural_Thickening": -1, NF: -1}),
    # Cardiomegaly
    ("Stable cardiomegaly.", {"Cardiomegaly": 1, NF: 0}),
    ("Enlarged cardiac silhouette.", {"Cardiomegaly": 1, NF: 0}),
    ("The heart is mildly enlarged.", {"Cardiomegaly": 1, NF: 0}),
    ("Heart size normal.", {"Cardiomegaly": 0, NF: 1}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0, NF: 1}),
    ("No cardiomegaly.", {"Cardiomegaly": 0, NF: 1}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": -1, NF: -1}),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": -1, NF: -1}),
    # Nodule
    ("A 1 cm nodule in the right upper lobe.", {"Nodule": 1, NF: 0}),
    ("No pulmonary nodules.", {"Nodule": 0, NF: 1}),
    ("Possible nodule projecting over the left lower lung.", {"Nodule": -1, NF: -1}),
    ("Calcified granuloma in the left upper lobe.", {}),
    ("Scattered calcified granulomas.", {}),
    # Mass
    ("Large right hilar mass.", {"Mass": 1, NF: 0}),
    ("No mass.", {"Mass": 0, NF: 1}),
    ("Left upper lobe opacity suspicious for mass.", {"Lung Opacity": 1, "Mass": -1, NF: 0}),
    ("No mass effect.", {}),
    # Hernia
    ("Hiatal hernia.", {"Hernia": 1, NF: 0}),
    ("Large hiatus hernia.", {"Hernia": 1, NF: 0}),
    ("No diaphragmatic hernia.", {"Hernia": 0, NF: 1}),
    ("Retrocardiac density likely a hiatal hernia.", {"Lung Opacity": 1, "Hernia": -1, NF: 0}),
    # Lung lesion
    ("Cavitary lesion in the right upper lobe.", {"Lung Lesion": 1, NF: 0}),
    ("No focal lung lesion.", {"Lung Lesion": 0, NF: 1}),
    ("Possible metastatic disease in the lungs.", {"Lung Lesion": -1, NF: -1}),
    ("Sclerotic bone lesions in the spine.", {}),
    # Fracture
    ("Healed right rib fracture.", {"Fracture": 1, NF: 0}),
    ("Old fractures of the left ribs.", {"Fracture": 1, NF: 0}),
    ("No acute fracture.", {"Fracture": 0, NF: 1}),
    ("Possible nondisplaced fracture of the right 6th rib.", {"Fracture": -1, NF: -1}),
    ("Compression deformity of a thoracic vertebral body.", {"Fracture": 1, NF: 0}),
    # Lung opacity
    ("Patchy opacity in the left lung base.", {"Lung Opacity": 1, NF: 0}),
    ("No focal airspace disease.", {"Lung Opacity": 0, NF: 1}),
    ("Questionable opacity in the right base.", {"Lung Opacity": -1, NF: -1}),
    ("Left base density.", {"Lung Opacity": 1, NF: 0}),
    ("Normal bone density.", {}),
    # Enlarged cardiomediastinum
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1, NF: 0}),
    ("The cardiomediastinal silhouette is enlarged.", {"Enlarged Cardiomediastinum": 1, NF: 0}),
    ("No mediastinal widening.", {"Enlarged Cardiomediastinum": 0, NF: 1}),
    ("Possible mediastinal widening.", {"Enlarged Cardiomediastinum": -1, NF: -1}),
    ("Mediastinal contours are within normal limits.", {"Enlarged Cardiomediastinum": 0, NF: 1}),
    # Support devices
    ("Right PICC line in place.", {"Support Devices": 1}),
    ("Sternotomy wires.", {"Support Devices": 1}),
    ("Endotracheal tube 4 cm above the carina.", {"Support Devices": 1}),
    ("Left-sided pacemaker with leads in the right atrium and ventricle.", {"Support Devices": 1}),
    ("The chest tube has been removed.", {"Support Devices": 0}),
    ("Interval removal of the nasogastric tube.", {"Support Devices": 0}),
    ("Lines and tubes are in standard position.", {"Support Devices": 1}),
    ("ETT terminates 4 cm above the carina. NGT tip in the stomach.", {"Support Devices": 1}),
    ("Right IJ sheath in the SVC.", {"Support Devices": 1}),
    ("Coronary artery stents.", {}),
    ("Questionable retained catheter fragment in the right atrium.", {"Support Devices": -1}),
    # No finding
    ("No acute cardiopulmonary abnormality.", {NF: 1}),
    ("Normal chest.", {NF: 1}),
    ("Lungs are clear.", {NF: 1}),
    ("Degenerative changes of the thoracic spine.", {}),
]


@pytest.mark.parametrize(("text", "expected"), PER_LABEL, ids=[t for t, _ in PER_LABEL])
def test_per_label_sentences(text, expected):
    assert label_report(text) == expected


# ------------------------------------------------------------------ scope of negation and uncertainty
SCOPE = [
    # negation runs through a comma list ...
    (
        "No pneumothorax, pleural effusion, or focal consolidation.",
        {"Pneumothorax": 0, "Effusion": 0, "Consolidation": 0, NF: 1},
    ),
    (
        "Lungs are clear without focal consolidation, pneumothorax or effusion.",
        {"Pneumothorax": 0, "Consolidation": 0, "Effusion": 0, NF: 1},
    ),
    (
        "Clear of focal airspace disease, pneumothorax, or pleural effusion.",
        {"Pneumothorax": 0, "Effusion": 0, "Lung Opacity": 0, NF: 1},
    ),
    ("There is no evidence of pneumonia or edema.", {"Edema": 0, "Pneumonia": 0, NF: 1}),
    ("Free of infiltrate.", {"Infiltration": 0, NF: 1}),
    # ... but not past a verb, a reporting word or a clause breaker
    ("No effusion, lungs are hyperexpanded.", {"Emphysema": 1, "Effusion": 0, NF: 0}),
    ("No definite effusion seen, small left apical pneumothorax.", {"Pneumothorax": 1, "Effusion": 0, NF: 0}),
    ("No pneumothorax but there is a small right effusion.", {"Pneumothorax": 0, "Effusion": 1, NF: 0}),
    (
        "No focal consolidation, however bibasilar atelectasis is present.",
        {"Atelectasis": 1, "Consolidation": 0, NF: 0},
    ),
    ("No acute disease, although mild cardiomegaly is noted.", {"Cardiomegaly": 1, NF: 0}),
    ("Lungs otherwise clear except for left basilar atelectasis.", {"Atelectasis": 1, NF: 0}),
    ("Cardiomegaly without edema.", {"Edema": 0, "Cardiomegaly": 1, NF: 0}),
    ("Stable cardiomegaly without heart failure.", {"Edema": 0, "Cardiomegaly": 1, NF: 0}),
    ("No visualized pneumothorax.", {"Pneumothorax": 0, NF: 1}),
    ("No demonstrated effusion, the heart is enlarged.", {"Effusion": 0, "Cardiomegaly": 1, NF: 0}),
    # negation after the mention
    ("Pneumothorax is not seen.", {"Pneumothorax": 0, NF: 1}),
    ("The previously seen left effusion has resolved.", {"Effusion": 0, NF: 1}),
    ("Consolidation is no longer visualized.", {"Consolidation": 0, NF: 1}),
    ("Focal infiltrate is absent.", {"Infiltration": 0, NF: 1}),
    ("Resolution of the right lower lobe pneumonia.", {"Pneumonia": 0, NF: 1}),
    # uncertainty before, after and on both sides
    ("Left lower lobe pneumonia is not excluded.", {"Pneumonia": -1, NF: -1}),
    ("Cannot exclude a small left effusion.", {"Effusion": -1, NF: -1}),
    ("Atelectasis versus pneumonia in the left base.", {"Atelectasis": -1, "Pneumonia": -1, NF: -1}),
    ("Atelectasis and/or infiltrate at the right base.", {"Atelectasis": -1, "Infiltration": -1, NF: -1}),
    ("Differential includes edema and atypical infection.", {"Edema": -1, "Pneumonia": -1, NF: -1}),
    ("Probable small bilateral effusions.", {"Effusion": -1, NF: -1}),
    ("Findings are suggestive of mild interstitial edema.", {"Edema": -1, NF: -1}),
    ("Pneumonia is suspected.", {"Pneumonia": -1, NF: -1}),
    ("Question of a small right apical pneumothorax.", {"Pneumothorax": -1, NF: -1}),
    ("Borderline heart size, small left effusion.", {"Effusion": 1, "Cardiomegaly": -1, NF: 0}),
    ("Possible atelectasis, no effusion.", {"Atelectasis": -1, "Effusion": 0, NF: -1}),
    ("No pneumothorax, possible small right effusion.", {"Pneumothorax": 0, "Effusion": -1, NF: -1}),
    ("No focal opacity to suggest pneumonia.", {"Pneumonia": 0, "Lung Opacity": 0, NF: 1}),
    ("It would be difficult to completely exclude a superimposed pneumonia.", {"Pneumonia": -1, NF: -1}),
    (
        "Opacity in the left lower lobe represents atelectasis or scarring.",
        {"Atelectasis": -1, "Fibrosis": -1, "Lung Opacity": 1, NF: 0},
    ),
    ("Right basilar atelectasis or early pneumonia.", {"Atelectasis": -1, "Pneumonia": -1, NF: -1}),
    (
        "Small effusion or pleural thickening at the left base.",
        {"Effusion": -1, "Pleural_Thickening": -1, NF: -1},
    ),
    # phrases with a negation word that do not negate
    ("No change in the small left pleural effusion.", {"Effusion": 1, NF: 0}),
    ("No significant interval change in the right upper lobe mass.", {"Mass": 1, NF: 0}),
    ("Without interval change of the mild bibasilar atelectasis.", {"Atelectasis": 1, NF: 0}),
    ("Cardiomegaly, not significantly changed.", {"Cardiomegaly": 1, NF: 0}),
    ("No suspicious pulmonary nodules identified.", {"Nodule": 0, NF: 1}),
    (
        "No pneumothorax, pleural effusion or suspicious focal airspace opacity.",
        {"Pneumothorax": 0, "Effusion": 0, "Lung Opacity": 0, NF: 1},
    ),
    (
        "Normal heart size and mediastinal contours.",
        {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, NF: 1},
    ),
    (
        "Cardiac and mediastinal contours are within normal limits.",
        {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, NF: 1},
    ),
    ("Overlapping ribs could obscure a small nodule.", {"Nodule": -1, NF: -1}),
    (
        "Density over the right 5th rib may XXXX healing rib fracture.",
        {"Fracture": -1, "Lung Opacity": 1, NF: 0},
    ),
    ("Hyperinflated lungs, air trapping versus poor inspiration.", {"Emphysema": 1, NF: 0}),
    # whole-report normal statements
    ("Low lung volumes, otherwise clear.", {NF: 1}),
    ("Negative.", {NF: 1}),
    ("No acute or active cardiac, pulmonary or pleural disease.", {NF: 1}),
    ("Unremarkable mediastinal contour.", {"Enlarged Cardiomediastinum": 0, NF: 1}),
    ("Stable appearance of the chest.", {}),
    # look-alikes
    ("Soft tissue edema of the chest wall.", {}),
    ("Surgical clips in the right upper quadrant from cholecystectomy.", {}),
    ("Degenerative disc herniation in the lower thoracic spine.", {}),
    ("Thyroid nodule noted on prior CT.", {}),
    ("Lytic lesion in the right humerus.", {}),
    ("Residuals of prior granulomatous infection.", {}),
    ("Pulmonary vascular engorgement appears within limits of normal.", {"Edema": 0, NF: 1}),
    ("CT may help if the patient is at high risk for lung cancer.", {}),
]


@pytest.mark.parametrize(("text", "expected"), SCOPE, ids=[t for t, _ in SCOPE])
def test_scope_sentences(text, expected):
    assert label_report(text) == expected


# ------------------------------------------------------------------ multi-sentence reports (IU / MIMIC style)
REPORTS = [
    (
        "Heart size normal. Lungs are clear. No pneumothorax or pleural effusion. No acute cardiopulmonary abnormality.",
        {"Pneumothorax": 0, "Effusion": 0, "Cardiomegaly": 0, NF: 1},
    ),
    (
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
        {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, NF: 1},
    ),
    (
        "XXXX XXXX left base density. No focal consolidation, pneumothorax or large pleural effusion. "
        "Cardiomegaly without heart failure. Minimal XXXX left basilar scarring/atelectasis.",
        {
            "Atelectasis": 1,
            "Consolidation": 0,
            "Pneumothorax": 0,
            "Edema": 0,
            "Fibrosis": 1,
            "Effusion": 0,
            "Cardiomegaly": 1,
            "Lung Opacity": 1,
            NF: 0,
        },
    ),
    (
        "Stable cardiomegaly with prominent perihilar opacities which may represent scarring or edema. "
        "No pleural effusions. No pneumothorax.",
        {
            "Pneumothorax": 0,
            "Edema": -1,
            "Fibrosis": -1,
            "Effusion": 0,
            "Cardiomegaly": 1,
            "Lung Opacity": 1,
            NF: 0,
        },
    ),
    (
        "Prior sternotomy. Normal heart size. Vascular congestion. No overt edema or lobar pneumonia. No pleural effusion.",
        {"Edema": 1, "Effusion": 0, "Pneumonia": 0, "Cardiomegaly": 0, NF: 0, "Support Devices": 1},
    ),
    (
        "Cardiac pacemaker in stable position with leads over the right atrium and right ventricle. "
        "Lungs are clear of focal airspace disease, pneumothorax, or pleural effusion. No acute bony findings.",
        {"Pneumothorax": 0, "Effusion": 0, "Lung Opacity": 0, NF: 1, "Support Devices": 1},
    ),
    (
        "1. No acute cardiopulmonary abnormality. 2. Stable cardiomegaly. 3. Calcified right hilar granuloma.",
        {"Cardiomegaly": 1, NF: 0},
    ),
    (
        "Low lung volumes with bibasilar atelectasis. Hiatal hernia. Degenerative changes of the thoracic spine.",
        {"Atelectasis": 1, "Hernia": 1, NF: 0},
    ),
    (
        "Hyperexpanded lungs consistent with emphysema. Healed left rib fractures. No focal airspace disease.",
        {"Emphysema": 1, "Fracture": 1, "Lung Opacity": 0, NF: 0},
    ),
    (
        "Possible left lower lobe pneumonia. Small left effusion. Pneumonia is present in the left lower lobe.",
        {"Effusion": 1, "Pneumonia": 1, NF: 0},
    ),
    (
        "Right PICC with tip in the SVC. Endotracheal tube 3 cm above the carina. Interval removal of the chest tube. "
        "No pneumothorax.",
        {"Pneumothorax": 0, NF: 1, "Support Devices": 1},
    ),
    (
        "Enlarged cardiomediastinal silhouette. Pulmonary vascular congestion with small bilateral effusions, "
        "consistent with CHF.",
        {"Edema": 1, "Effusion": 1, "Enlarged Cardiomediastinum": 1, NF: 0},
    ),
    (
        "Right upper lobe mass with a cavitary component, concerning for malignancy. Left hilar adenopathy.",
        {"Mass": 1, "Lung Lesion": 1, "Enlarged Cardiomediastinum": 1, NF: 0},
    ),
    ("Right apical pleural thickening, unchanged. Otherwise normal chest.", {"Pleural_Thickening": 1, NF: 0}),
    (
        "FINDINGS: Heart size upper limits of normal. IMPRESSION: No acute disease.",
        {"Cardiomegaly": -1, NF: -1},
    ),
    (
        "Multiple bilateral pulmonary nodules compatible with metastatic disease. No effusion.",
        {"Effusion": 0, "Nodule": 1, "Lung Lesion": 1, NF: 0},
    ),
    (
        "Interval placement of a left subclavian central venous catheter. Lungs clear.",
        {NF: 1, "Support Devices": 1},
    ),
    (
        "Mild diffuse interstitial opacities, which could represent atypical infection. Fibrosis is not excluded.",
        {"Infiltration": 1, "Fibrosis": -1, "Pneumonia": -1, "Lung Opacity": 1, NF: 0},
    ),
]


@pytest.mark.parametrize(("text", "expected"), REPORTS, ids=[t[:60] for t, _ in REPORTS])
def test_multi_sentence_reports(text, expected):
    assert label_report(text) == expected


def test_at_least_150_sentences_with_each_label_positive_negated_and_uncertain():
    cases = PER_LABEL + SCOPE + REPORTS
    sentences = sum(max(1, text.count(". ") + 1) for text, _ in cases)
    assert sentences >= 150
    for label in LABELS:
        seen = {expected[label] for _, expected in cases if label in expected}
        assert {1, 0, -1} <= seen, f"{label} lacks a case for values { ({1, 0, -1} - seen) }"


# ------------------------------------------------------------------ laterality
LATERALITY = [
    ("Small left pleural effusion.", "Effusion", Finding(1, "left")),
    ("Right lower lobe pneumonia.", "Pneumonia", Finding(1, "right")),
    ("Low lung volumes with bibasilar atelectasis.", "Atelectasis", Finding(1, "bilateral")),
    ("Patchy opacity in the left lung base.", "Lung Opacity", Finding(1, "left")),
    ("Opacity in the lingula.", "Lung Opacity", Finding(1, "left")),
    ("Effusions bilaterally.", "Effusion", Finding(1, "bilateral")),
    ("Left effusion. Right effusion.", "Effusion", Finding(1, "bilateral")),
    ("Atelectasis in the left base greater than right.", "Atelectasis", Finding(1, "left")),
    ("Stable cardiomegaly.", "Cardiomegaly", Finding(1, "unspecified")),
    ("Large left ventricular enlargement.", "Cardiomegaly", Finding(1, "unspecified")),
    ("Pneumothorax.", "Pneumothorax", Finding(1, "unspecified")),
    ("Left basilar atelectasis, right effusion.", "Atelectasis", Finding(1, "left")),
    ("Left basilar atelectasis, right effusion.", "Effusion", Finding(1, "right")),
    ("Consolidation and atelectasis in the right lung base.", "Consolidation", Finding(1, "right")),
    ("Possible left basilar infiltrate versus atelectasis.", "Atelectasis", Finding(-1, "left")),
    ("No right pneumothorax.", "Pneumothorax", Finding(0, "right")),
    ("Left basilar airspace disease and pleural effusion unchanged.", "Effusion", Finding(1, "left")),
    ("Mild left-sided scarring/subsegmental atelectasis.", "Atelectasis", Finding(1, "left")),
    ("Right effusion, atelectasis.", "Atelectasis", Finding(1, "unspecified")),
    ("Right basilar atelectasis or early pneumonia.", "Pneumonia", Finding(-1, "right")),
    ("Patchy right middle lobe and lingular airspace disease.", "Lung Opacity", Finding(1, "bilateral")),
    ("Small bilateral effusions, larger on the right.", "Effusion", Finding(1, "bilateral")),
    ("Right PICC line with tip in the SVC.", "Support Devices", Finding(1, "right")),
]


@pytest.mark.parametrize(("text", "label", "finding"), LATERALITY)
def test_laterality(text, label, finding):
    assert label_findings(text)[label] == finding


def test_findings_cover_vocabulary_and_lateralities():
    found = label_findings("Left effusion. Pacemaker. Stable cardiomegaly. Possible right pneumothorax.")
    assert set(found) <= set(LABELS)
    assert all(f.laterality in LATERALITIES and f.value in (1, 0, -1) for f in found.values())


# ------------------------------------------------------------------ API
def test_output_follows_label_order():
    out = label_report("Pacemaker. Hiatal hernia. Bibasilar atelectasis. No effusion.")
    assert list(out) == [label for label in LABELS if label in out]


def test_labeler_instance_and_batch_agree_with_functions():
    texts = ["No acute disease.", "Possible pneumonia.", ""]
    labeler = ReportLabeler()
    assert (
        labeler.batch(texts) == [label_report(t) for t in texts] == [{NF: 1}, {"Pneumonia": -1, NF: -1}, {}]
    )
    assert labeler.findings("Left effusion.") == label_findings("Left effusion.")


@pytest.mark.parametrize("bad", [None, 3, b"no effusion"])
def test_non_text_is_rejected(bad):
    with pytest.raises(ValueError, match="must be a str"):
        label_report(bad)


def test_clean_removes_deid_tokens_and_case():
    assert (
        clean("XXXX left base  density. Heart size XXXX normal.") == "left base density. heart size normal."
    )


def test_phrase_tables_name_only_vocabulary_labels():
    from cxrl.reports import phrases

    tables = [phrases.MENTIONS, phrases.UNMENTIONS, phrases.NORMAL_FINDINGS]
    assert all(set(t) <= set(LABELS) for t in tables)
    assert set(LABELS) - set(phrases.MENTIONS) == {NF}
    assert phrases.NON_LATERAL <= set(LABELS)
