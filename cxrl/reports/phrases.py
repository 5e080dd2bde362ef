"""Phrase data for the report labeler: what counts as a mention, and what changes its meaning.

Organised the way rule-based chest X-ray labelers are (the CheXpert labeler, Irvin et al.
2019, and NegBio before it): per label a list of *mention* patterns, a list of *unmention*
patterns (look-alikes that must not count, e.g. "subcutaneous emphysema" for Emphysema),
then sentence-scoped *negation* and *uncertainty* triggers. The phrases here were written
for this project against how radiologists write (IU and MIMIC style); none are copied.

Every entry is a regular-expression fragment over lower-cased text with de-identification
tokens removed. ``labeler.py`` joins each list into one compiled alternation, bounded so a
fragment never matches inside a longer word; ``\\w*`` suffixes cover plurals and adjective
forms (``atelecta\\w*`` = atelectasis, atelectases, atelectatic).
"""

from __future__ import annotations

# Words that qualify a finding without changing its presence (for use inside patterns).
_DEG = r"(?:(?:very |only )?(?:mild|mildly|moderate|moderately|marked|markedly|severe|severely|slight|slightly|minimal|minimally|significant|significantly|substantial|substantially|massive|massively|borderline|somewhat|stable|stably|again|persistent|persistently|still|chronic|chronically|now|newly|new|progressively|increasingly|further|more|less|top[- ]normal|overall|diffuse|diffusely|globally|globular|grossly|at least|possibly|probably|likely|likely to be|questionably|perhaps|may be|might be|could be)[, ]+){0,3}"
_HEART = r"(?:heart|cardiac silhouette|cardiac shadow|cardiac contour|cardiac size|cardiac diameter|heart size|heart shadow|cardiac outline|cardiac contours|cardiac silhouettes|cardiac borders?)"
_MEDIASTINUM = r"(?:mediastinum|mediastinal (?:silhouette|contours?|shadow|width|structures)|cardiomediastinal (?:silhouette|contours?|shadow|structures|width|size|silhouettes)|superior mediastinum|mediastinal and hilar contours)"
_BE = r"(?:is|are|appears?|remains?|was|were|seems?|looks?|has become|have become|has been|have been)"
_ENLARGED = r"(?:enlarged|enlarging|increased in size|large|prominent|widened|widening|dilated|mildly large)"

# ---------------------------------------------------------------- mentions
MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        r"atelecta\w*",
        r"(?:lobar|lobe|segmental|subsegmental|lung|lingular|basilar) collapse",
        r"collapse of the (?:\w+ ){0,3}(?:lobe|lung|lingula|segment)",
        r"collapsed (?:\w+ ){0,2}(?:lobe|lung|lingula)",
        r"volume loss",
        r"loss of (?:lung )?volume",
        r"(?:plate|plate-|discoid|band)[- ]?like (?:opacit\w+|densit\w+|atelecta\w+)",
    ),
    "Consolidation": (
        r"consolidat\w*",
        r"air ?bronchograms?",
    ),
    "Infiltration": (
        r"infiltrat\w*",
        r"interstitial (?:opacit\w+|prominence|markings?|pattern|process|thickening|changes?|densit\w+|infiltrat\w*)",
        r"(?:increased|prominent|coarse|coarsened|accentuated) (?:\w+ ){0,2}(?:interstitial|lung|pulmonary|bronchovascular|reticular) markings?",
        r"reticul\w* (?:opacit\w+|pattern|markings?|densit\w+|changes?)",
        r"reticulonodular\w*",
        r"reticulation",
    ),
    "Pneumothorax": (
        r"pneumothora\w*",
        r"hydropneumothora\w*",
        r"ptx",
        r"pleural air(?: collections?)?",
        r"(?:apical|apicolateral) (?:pleural )?air",
        r"visceral pleural line",
    ),
    "Edema": (
        r"o?edema\w*",
        r"(?:congestive )?heart failure",
        r"chf",
        r"cardiac decompensation",
        r"(?:pulmonary |central |pulmonary vascular |perihilar )?(?:vascular |venous )?congestion",
        r"fluid overload",
        r"volume overload",
        r"cephaliz\w*",
        r"kerley (?:b )?lines?",
        r"indistinct\w* (?:of the )?(?:pulmonary )?vasculature",
        r"(?:pulmonary )?vascular (?:engorgement|indistinctness|redistribution)",
        r"engorge\w* (?:pulmonary )?(?:vessels|vasculature)",
    ),
    "Emphysema": (
        r"emphysema\w*",
        r"copd",
        r"chronic obstructive (?:pulmonary|lung|airways?) disease",
        r"hyper-?expan\w*",
        r"hyper-?inflat\w*",
        r"hyper-?aerat\w*",
        r"hyper-?distend\w*",
        r"hyper-?distention",
        r"over-?inflat\w*",
        r"over-?expan\w*",
        r"bullae",
        r"bullous",
        r"bulla",
        r"blebs?",
        r"flatten\w* (?:of )?(?:the )?(?:bilateral )?(?:hemi-?)?diaphragms?",
    ),
    "Fibrosis": (
        r"fibros\w*",
        r"fibrotic",
        r"fibronodular",
        r"fibrocalcific",
        r"(?:interstitial lung disease|ild|uip|usual interstitial pneumonia)",
        r"honeycomb\w*",
        r"scar",
        r"scars",
        r"scarring",
        r"cicatri\w*",
        r"traction bronchiectasis",
    ),
    "Effusion": (
        r"effusions?",
        r"hydrothora\w*",
        r"hydropneumothora\w*",
        r"pleural fluid",
        r"(?:fissural|layering|loculated|subpulmonic|pleural) fluid",
        r"fluid (?:in|within|tracking (?:into|along)) the (?:\w+ ){0,2}(?:fissure|pleural space|costophrenic)",
        r"blunt\w* (?:of )?(?:the )?(?:\w+ ){0,2}(?:costophrenic|costodiaphragmatic|cp) (?:angles?|sulcus|sulci|recess\w*)",
        r"(?:costophrenic|costodiaphragmatic|cp) (?:angles? |sulcus |sulci )?(?:is |are )?(?:\w+ )?blunt\w*",
        r"meniscus",
    ),
    "Pneumonia": (
        r"pneumoni\w*",
        r"bronchopneumoni\w*",
        r"pneumonitis",
        r"infecti\w*",
        r"aspiration",
        r"(?:lobar|multifocal|round) pneumonia",
    ),
    "Pleural_Thickening": (
        r"pleural thicken\w*",
        r"thicken\w* (?:of )?(?:the )?(?:\w+ ){0,2}pleura\w*",
        r"thickened (?:\w+ )?pleura\w*",
        r"pleural (?:plaques?|calcifications?|scarring|scar|reaction|fibrosis)",
        r"pleural[- ](?:parenchymal|based) (?:scarring|scar|thickening|opacit\w+|densit\w+)",
        r"pleuroparenchymal (?:scarring|scar|thickening|opacit\w+)",
        r"(?:apical )?pleural caps?",
        r"apical (?:pleural )?capping",
        r"apical caps?",
        r"calcified pleura\w*",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"cardiac (?:enlargement|megaly)",
        r"enlarge\w* (?:of )?(?:the )?(?:cardiac|heart)(?: (?:silhouette|shadow|contour|size|border))?",
        r"enlarged heart",
        r"(?:large|prominent|globular) (?:heart|cardiac silhouette|cardiac shadow)",
        _HEART
        + r" "
        + _BE
        + r" "
        + _DEG
        + r"(?:enlarged|large|increased(?: in size)?|prominent|globular|upper limits? of normal|top normal|at the upper limits? of normal)",
        _HEART + r" " + _DEG + r"(?:enlarged|increased|enlargement)",
        r"(?:left|right|bi) ?ventricular (?:enlargement|hypertrophy|prominence)",
        r"(?:left|right|bi) ?atri(?:al|um) (?:enlargement|prominence|is enlarged)",
        r"biventricular enlargement",
        r"increased cardiothoracic ratio",
    ),
    "Nodule": (
        r"nodul\w*",
        r"micronodul\w*",
        r"coin lesions?",
    ),
    "Mass": (
        r"mass",
        r"masses",
        r"masslike",
        r"mass-like",
        r"tumou?rs?",
        r"neoplasm\w*",
        r"carcinoma\w*",
        r"malignan\w*",
        r"cancer",
        r"bronchogenic",
    ),
    "Hernia": (
        r"herni\w*",
        r"bochdalek",
        r"morgagni",
    ),
    "Lung Lesion": (
        r"lesions?",
        r"cavit\w*",
        r"metasta\w*",
    ),
    "Fracture": (
        r"fractur\w*",
        r"fx",
        r"fxs",
        r"compression deformit\w*",
        r"(?:wedge|wedging) (?:deformit\w*|compression)",
        r"(?:callus|callous) formation",
    ),
    "Lung Opacity": (
        r"opaci\w*",
        r"densit(?:y|ies)",
        r"air ?-?space (?:disease|process|opacit\w+|filling)",
        r"alveolar (?:disease|process|filling|opacit\w+)",
        r"ground[- ]glass",
        r"hazy",
        r"haziness",
        r"parenchymal (?:disease|process|abnormalit\w*)",
        r"streaky (?:\w+ )?(?:markings?|change)",
    ),
    "Enlarged Cardiomediastinum": (
        r"enlarged (?:the )?cardiomediastin\w*(?: (?:silhouette|contour)s?)?",
        r"cardiomediastinal (?:enlargement|widening|prominence)",
        _MEDIASTINUM + r" " + _BE + r" " + _DEG + _ENLARGED,
        r"(?:widen\w*|enlarge\w*|prominen\w*|wide|dilat\w*) (?:of )?(?:the )?(?:superior )?(?:cardio)?mediastin\w*",
        r"(?:superior )?mediastinal (?:widening|enlargement|prominence|lipomatosis)",
        r"(?:prominent|widened|enlarged) (?:superior )?mediastinal (?:contours?|silhouette|shadow|width)",
        r"(?:mediastinal|hilar|paratracheal) (?:lymph ?adenopathy|adenopathy|lymph node enlargement)",
        r"(?:lymph ?adenopathy|adenopathy)",
    ),
    "Support Devices": (
        r"pace-?makers?",
        r"pacers?",
        r"(?:cardiac |dual[- ]chamber |single[- ]chamber |transvenous )?(?:pacing|pacer|defibrillator|icd|aicd) (?:device|generator|leads?|wires?|unit)s?",
        r"aicds?",
        r"icds?",
        r"defibrillators?",
        r"(?:loop recorder|cardiac monitor|watchman|impella)",
        r"piccs?(?: lines?)?",
        r"(?:central |venous |central venous |ij |jugular |subclavian |femoral |hickman |port |peripheral |swan[- ]ganz |pulmonary arter\w* |hemodialysis |dialysis |pleural |pigtail |indwelling )+(?:catheters?|lines?)",
        r"catheters?",
        r"swan[- ]ganz",
        r"port-?a-?caths?",
        r"(?:power|chest|chest wall|mediport|infusion|subcutaneous|venous access) ?ports?",
        r"mediports?",
        r"(?:endotracheal|et|ett|tracheostomy|trach|nasogastric|ng|orogastric|og|feeding|dobhoff|dubhoff|enteric|gastric|chest|thoracostomy|pleural|gastrostomy|nasoenteric|g|j|ng/og) tubes?",
        r"(?:endotracheal|tracheostomy|tracheal) (?:cannula|appliance)",
        r"tracheostomy",
        r"trach",
        r"intubat\w*",
        r"sternotom\w*",
        r"sternal (?:wires?|sutures?|cerclage)",
        r"(?:median )?sternotomy wires?",
        r"cabg",
        r"(?:surgical|vascular|cholecystectomy|axillary|mediastinal|postsurgical|post-surgical) clips?",
        r"(?:surgical )?staples?",
        r"suture (?:lines?|material)",
        r"stents?",
        r"(?:prosthetic|mechanical|artificial) (?:\w+ )?valves?",
        r"(?:aortic|mitral|tricuspid) valve (?:replacement|prosthesis|repair|annuloplasty)",
        r"valve (?:replacement|prosthesis)",
        r"annuloplasty ring",
        r"lvad",
        r"iabp",
        r"intra-?aortic balloon(?: pump)?",
        r"(?:ecg|ekg|monitoring|telemetry|cardiac monitoring) (?:leads?|wires?|pads?|electrodes?)",
        r"electrodes?",
        r"(?:orthopedic |surgical |fixation |spinal |fusion |cervical |thoracic |lumbar )*hardware",
        r"(?:fixation|fusion) (?:plates?|screws?|rods?|wires?|devices?)",
        r"(?:spinal|thoracolumbar|cervical) fusion",
        r"(?:\w+ )?(?:arthroplasty|prosthesis|prostheses)",
        r"vertebroplasty",
        r"kyphoplasty",
        r"drains?",
        r"(?:tip|tips) (?:of the )?(?:\w+ ){0,2}(?:terminat\w*|project\w*|overl\w*|in|at)",
        r"(?:implanted|medical|support|cardiac|implantable) devices?",
        r"(?:embolization )?coils?",
        r"ivc filter",
        r"vascular graft",
    ),
}

# Look-alikes that must not count as a mention of the label (matched span wins over mention).
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (r"(?:vertebral|vertebra|vertebral body|body height) collapse",),
    "Edema": (
        r"(?:soft[- ]tissue|subcutaneous|chest wall|extremity|peripheral|pedal|leg|scalp|facial) o?edema",
        r"o?edema (?:of|in) the (?:soft tissues?|chest wall|extremit\w+|legs?)",
        r"(?:nasal|sinus|mucosal) congestion",
    ),
    "Emphysema": (
        r"(?:subcutaneous|soft[- ]tissue|mediastinal|interstitial|chest wall|surgical) emphysema",
        r"emphysema (?:of|in|within) the (?:soft tissues?|chest wall|neck)",
    ),
    "Fibrosis": (
        r"pleural(?:[- ]parenchymal| based)? (?:scarring|scars?|fibrosis)",
        r"pleuroparenchymal (?:scarring|scars?)",
        r"(?:skin|surgical|sternotomy|incision\w*) scars?",
        r"cystic fibrosis",
    ),
    "Effusion": (
        r"pericardial effusions?",
        r"(?:joint|knee|shoulder|glenohumeral|subdeltoid) effusions?",
    ),
    "Pneumonia": (
        r"aspiration (?:precautions|risk)",
        r"(?:urinary tract|wound|skin|soft tissue|line|catheter) infections?",
    ),
    "Nodule": (
        r"(?:thyroid|thyroid gland|breast|skin|lymph) nodul\w*",
        r"nodul\w* (?:of|in) the (?:thyroid|breast|skin)",
    ),
    "Mass": (
        r"mass effect",
        r"(?:body|muscle|bone|fat) mass",
        r"(?:breast|prostate|colon|colorectal|renal|kidney|thyroid|skin|bladder|ovarian|pancreatic|cervical|uterine) (?:cancer|carcinoma|tumou?r)",
        r"history of (?:\w+ ){0,2}(?:cancer|carcinoma|malignancy|tumou?r|neoplasm)",
    ),
    "Hernia": (
        r"(?:dis[ck]|disk|inguinal|umbilical|ventral|incisional|abdominal wall|nucleus pulposus) herni\w*",
        r"herni\w* (?:of|at) the (?:\w+ ){0,2}(?:dis[ck]|disks?|spine)",
    ),
    "Lung Lesion": (
        r"(?:bon\w+|osseous|lytic|blastic|sclerotic|skin|cutaneous|liver|hepatic|renal|brain|spine|spinal|vertebral|osteolytic|osteoblastic|expansile|rib|bony|soft tissue|breast|thyroid|chest wall|sclerotic bone|coin) lesions?",
        r"lesions? (?:of|in|within) the (?:\w+ ){0,2}(?:bones?|spine|ribs?|liver|humerus|clavicle|scapula|vertebra\w*|soft tissues?|thyroid)",
        r"(?:oral|nasal|sinus|peritoneal|abdominal|pericardial|cardiac|mediastinal) cavit\w*",
        r"(?:bone|osseous|skeletal|osteoblastic|osteolytic|brain|hepatic|liver|bony) metasta\w*",
        r"metasta\w* (?:to|in|of) the (?:\w+ ){0,2}(?:bones?|spine|liver|brain|ribs?|skeleton)",
    ),
    "Fracture": (r"fracture (?:fixation|repair) hardware",),
    "Lung Opacity": (
        r"(?:bone|bony|osseous|mineral|breast|soft[- ]tissue|metallic|metal|calcific|calcium|fat|fluid|water) densit(?:y|ies)",
        r"(?:breast|nipple|soft[- ]tissue) (?:opacit\w+|shadows?)",
        r"densit(?:y|ies) of the (?:bones?|breast|soft tissues?)",
        r"(?:decreased|increased|normal) (?:bone |bony )?(?:mineral )?densit(?:y|ies)",
        r"opaci\w* (?:projecting|projects|overlying|overlies|from) (?:over )?(?:the )?(?:\w+ ){0,2}(?:nipple|breast|skin|soft tissues?|clothing|button)",
        r"(?:contrast|radio-?opaque|radiopaque|metallic|metal|foreign body|skin|linear metallic) opaci\w*",
        r"radio-?opaque",
        r"radiopaque",
    ),
    "Enlarged Cardiomediastinum": (
        r"(?:axillary|hilar calcified|calcified|supraclavicular|cervical) (?:lymph ?adenopathy|adenopathy)",
    ),
    "Support Devices": (
        r"(?:catheters?|lines?|tubes?|clips?|drains?|wires?|ports?|devices?|hardware) (?:is |are |were |has been |have been )?(?:not|no longer) (?:seen|visualized|present|identified|evident)",
        r"(?:foley|urinary|suprapubic|rectal|bladder) catheters?",
        r"(?:biliary|ureteral|renal|esophageal|coronary) stents?",
        r"coronary (?:artery )?stents?",
        r"(?:biliary|pancreatic) drains?",
        r"(?:skin|surgical) staples? (?:in|of) the (?:abdomen|skin)",
        r"(?:clips?|staples?) (?:in|of) the (?:\w+ ){0,2}(?:abdomen|gallbladder|upper abdomen|right upper quadrant|neck)",
        r"(?:gallbladder|cholecystectomy) (?:surgical )?clips?",
        r"cholecystectomy clips?",
        r"(?:tip|tips) of the (?:\w+ ){0,2}(?:scapula|spinous|clavicle|lung|transverse|acromion|odontoid|coracoid)",
        r"(?:hip|knee) (?:arthroplasty|prosthes\w*)",
        r"(?:nasal|dental) (?:prosthes\w*)",
        r"breast (?:prosthes\w*|implants?)",
        r"(?:dental|nasal) (?:appliance|hardware)",
    ),
}

# Statements that report a label as normal (value 0) without a negation word.
NORMAL_FINDINGS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        _HEART
        + r"(?: and (?:mediastinal|mediastinum|cardiomediastinal|pulmonary vascular\w*|pulmonary vasculature|hilar|lungs?)\w*(?: (?:contours?|silhouettes?|size))?)?(?: (?:size|sizes|contour|contours|silhouette))? (?:(?:is|are|appears?|remains?) )?(?:again |stable |stably |overall )?(?:normal|within normal limits|within the normal (?:size )?range|unremarkable|not enlarged|normal in size(?: and (?:contour|shape|configuration))?|of normal size)",
        r"normal(?:[- ]sized?)? (?:heart|cardiac|cardiomediastinal|cardiac and mediastinal)(?: (?:size|silhouette|contours?|shadow|outline|and mediastinal (?:contours?|silhouettes?)))?",
        r"(?:heart|cardiac size|cardiac silhouette) (?:size )?(?:is )?(?:of )?normal (?:size|limits)",
        r"no (?:evidence of )?cardiomegaly",
        r"(?:heart|cardiac silhouette) (?:is |are )?(?:not|no longer) (?:enlarged|large)",
        r"cardiomediastinal (?:silhouette|contours?|silhouettes?|shadow|structures|size) (?:(?:is|are|appears?|remains?) )?(?:again |stable and |stably |overall )?(?:normal|within normal limits|unremarkable|normal in size(?: and contour)?|of normal size)",
    ),
    "Enlarged Cardiomediastinum": (
        _MEDIASTINUM
        + r"(?: and (?:hilar|cardiac|heart|pulmonary vascular\w*|pulmonary vasculature)\w*(?: (?:contours?|silhouettes?|size))?)? (?:(?:is|are|appears?|remains?) )?(?:again |stable and |stably |overall )?(?:normal|within normal limits|unremarkable|normal in (?:size|contour|size and contour|configuration)|of normal size|not (?:enlarged|widened))",
        r"(?:heart|cardiac|cardiac and|heart and) (?:size )?(?:and )?mediastin\w*(?: (?:contours?|silhouettes?|size))? (?:(?:is|are|appears?|remains?) )?(?:normal|within normal limits|unremarkable|stable|negative|normal in size)",
        r"normal (?:cardiomediastinal|mediastinal|cardiac and mediastinal)(?: (?:silhouette|contours?|width|size|shadow))?",
        r"normal mediastinum",
        r"(?:heart|cardiac) and mediastinum (?:of normal size|normal)",
    ),
    "Edema": (
        r"(?:pulmonary )?vascular(?:ity|ature) (?:(?:is|are|appears?) )?(?:normal|within normal limits|unremarkable|not congested)",
        r"normal (?:pulmonary )?vascularity",
        r"normal (?:pulmonary )?vasculature",
    ),
    "Effusion": (
        r"(?:costophrenic|cp|costodiaphragmatic) (?:angles?|sulci|sulcus|recesses) (?:(?:is|are|remain) )?(?:sharp|clear|preserved|normal|well[- ]defined)\w*",
        r"sharp (?:costophrenic|cp|costodiaphragmatic) (?:angles?|sulci|sulcus)",
    ),
}

# Whole-report normal statements: they make "No Finding" positive when no pathology is
# positive or uncertain (see labeler.py for the full rule).
NORMAL_REPORT: tuple[str, ...] = (
    r"no (?:\w+ ){0,3}(?:abnormalit\w*|disease|process|processes|findings?|pathology|changes?|abnormal findings)",
    r"(?:normal|unremarkable|negative|clear) (?:(?:two|2|one|1|single|frontal|portable|upright|pa|ap|lateral|view|and|radiographic|chest|x-?ray|film|radiograph|study|examination|exam)[, ]+){0,5}(?:chest|study|examination|exam|radiograph|radiographs|film|x-?ray|cxr)",
    r"(?:chest|study|examination|exam|radiograph|cxr) (?:is |appears )?(?:normal|unremarkable|negative|within normal limits)",
    r"(?:lungs?|lung fields|lung parenchyma) (?:(?:are|is|appear|appears|remain|remains) )?(?:\w+ )?(?:clear|normal|unremarkable|grossly clear|well[- ]aerated|well[- ]expanded and clear|expanded and clear|normally inflated and clear)",
    r"clear lungs?",
    r"(?:heart|cardiac|mediastin|cardiomediastin)\w* (?:\w+ ){0,3}(?:normal|within normal limits|unremarkable)",
    r"within normal limits",
    r"no (?:\w+ ){0,2}(?:cardiopulmonary|intrathoracic|chest) (?:abnormalit\w*|disease|process|findings?)",
    r"negative (?:for )?(?:acute )?(?:cardiopulmonary|chest|intrathoracic) (?:abnormalit\w*|disease|process|findings?)",
    r"(?:nothing|no radiographic evidence) (?:acute|abnormal)",
    r"no active (?:\w+ )?disease",
    r"(?:normal|healthy) (?:heart|lungs)",
)

# ---------------------------------------------------------------- modifiers
# Negation words before a mention (scope: to the mention, within the clause).
PRE_NEGATION: tuple[str, ...] = (
    r"no",
    r"not",
    r"without",
    r"absent",
    r"absence of",
    r"free of",
    r"clear of",
    r"negative for",
    r"negative",
    r"neither",
    r"nor",
    r"never",
    r"none",
    r"rather than",
    r"instead of",
    r"resolution of",
    r"resolved",
    r"resolving of",
    r"removal of",
    r"removed",
    r"interval removal of",
    r"excluding",
    r"deny|denies",
    r"lack of",
    r"disappearance of",
)

# Negation words after a mention ("pneumothorax is not seen", "effusion has resolved").
POST_NEGATION: tuple[str, ...] = (
    r"(?:is|are|was|were|has been|have been)? ?not (?:\w+ )?(?:seen|identified|visualized|visualised|evident|present|demonstrated|appreciated|detected|noted|visible|apparent|observed|shown|found|re-?demonstrated|definitely seen)",
    r"(?:is|are|was|were|has|have)? ?no longer (?:\w+ )?(?:seen|identified|visualized|evident|present|demonstrated|appreciated|visible|apparent|noted)",
    r"(?:is|are|has|have|has been|have been)? ?(?:\w+ )?(?:resolved|removed|cleared|withdrawn|discontinued)",
    r"(?:is|are)? ?absent",
    r"(?:is|are|was|were|has been|have been) (?:excluded|ruled out)",
    r"(?:is|are)? ?negative",
    r"(?:is|are)? ?unlikely",
)

# Uncertainty words before a mention.
PRE_UNCERTAINTY: tuple[str, ...] = (
    r"possible",
    r"possibly",
    r"probable",
    r"probably",
    r"likely",
    r"most likely",
    r"presumabl[ey]",
    r"presumed",
    r"suspect\w*",
    r"suspicious (?:for|of)?",
    r"concern\w* (?:for|of)",
    r"worrisome for",
    r"question of",
    r"questionable",
    r"questionably",
    r"equivocal",
    r"indeterminate",
    r"uncertain",
    r"borderline",
    r"(?:may|might|could) (?:\w+ )?(?:be|represent|reflect|indicate|relate to|be related to|be due to|be secondary to|have|include|signify)",
    r"suggest\w*(?: of)?",
    r"cannot (?:be )?(?:entirely |completely |definitely |totally )?(?:exclude[d]?|rule[d]? out|differentiate|distinguish)",
    r"can ?not (?:be )?(?:entirely |completely )?(?:exclude[d]?|rule[d]? out)",
    r"can't (?:be )?(?:exclude[d]?|rule[d]? out)",
    r"difficult to (?:exclude|rule out|distinguish)",
    r"not (?:entirely |completely |definitely |totally )?(?:exclude[d]?|ruled out)",
    r"differential (?:diagnosis )?(?:includes?|considerations?|would include)",
    r"(?:r/o|rule out|evaluate for|evaluation for|assess for|assessment for|to exclude|correlate for)",
    r"consider\w*",
    r"(?:versus|vs\.?)",
    r"and/or",
    r"favou?r\w*",
    r"(?:at the )?upper limits? of normal",
    r"top[- ]normal",
)

# Uncertainty words after a mention ("pneumonia cannot be excluded").
POST_UNCERTAINTY: tuple[str, ...] = (
    r"(?:cannot|can ?not|can't|could not|not) (?:\w+ ){0,2}(?:exclude[d]?|rule[d]? out)",
    r"(?:is|are|would be|remains?) (?:\w+ )?(?:possible|likely|suspected|questioned|considered|a consideration|not excluded|not ruled out|difficult to exclude|in the differential|favou?red|questionable|uncertain|equivocal|indeterminate|probable|suggested)",
    r"(?:may|might|could) (?:\w+ )?(?:be present|exist|be seen|be considered)",
    r"(?:versus|vs\.?)",
    r"and/or",
    r"not (?:entirely |completely |definitely )?(?:exclude[d]?|ruled out)",
)

# Phrases that contain a negation word but do not negate the finding next to them.
PSEUDO_NEGATION: tuple[str, ...] = (
    r"no (?:\w+ )?(?:significant |appreciable |substantial |interval |definite |major |significant interval |radiographic )?(?:change|changes|increase|decrease|worsening|improvement|progression|difference)",
    r"(?:without|with no) (?:\w+ )?(?:change|changes|increase|decrease|worsening|improvement|progression)",
    r"not (?:significantly |substantially |markedly )?(?:changed|increased|decreased|worsened|improved)",
    r"not only",
    r"no other",
    r"gram[- ]negative",
    r"negative pressure",
)

# Words that end a clause: negation and uncertainty do not reach across them.
CLAUSE_BREAKERS: tuple[str, ...] = (
    r"but",
    r"however",
    r"although",
    r"though",
    r"whereas",
    r"while",
    r"which",
    r"that is",
    r"except(?: for)?",
    r"aside from",
    r"apart from",
    r"other than",
    r"with the exception of",
    r"otherwise",
    r"yet",
    r"there (?:is|are|has been|have been|was|were)",
    r"in addition",
    r"additionally",
)

# Verbs that stop a pre-trigger's reach: "no effusion, lungs are hyperexpanded".
SCOPE_STOPPERS: tuple[str, ...] = (
    r"is",
    r"are",
    r"was",
    r"were",
    r"has",
    r"have",
    r"remains?",
    r"appears?",
    r"demonstrates?",
    r"shows?",
    r"with",
    r"and stable",
    r"and unchanged",
    r"and persistent",
)

# Laterality words (a mention's side comes from these, nearest first).
LEFT: tuple[str, ...] = (r"left", r"lt", r"lingula\w*", r"retrocardiac", r"left-sided", r"levo\w*")
RIGHT: tuple[str, ...] = (r"right", r"rt", r"right-sided")
BILATERAL: tuple[str, ...] = (
    r"bilateral\w*",
    r"bibasal",
    r"bibasilar\w*",
    r"biapical\w*",
    r"bihilar",
    r"both",
    r"b/l",
    r"bilat",
    r"diffuse\w*",
    r"left (?:and|greater than|more than|>) right",
    r"right (?:and|greater than|more than|>) left",
    r"multifocal",
)

# Labels whose laterality is always "unspecified" (midline structures, whole-report labels).
NON_LATERAL: frozenset[str] = frozenset(
    {"Cardiomegaly", "Enlarged Cardiomediastinum", "No Finding", "Hernia"}
)
