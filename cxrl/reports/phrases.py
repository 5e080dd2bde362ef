"""Phrase data for the report labeler: what counts as a mention, and what changes its meaning.

Organised the way rule-based chest X-ray labelers are (the CheXpert labeler, Irvin et al.
2019, and NegBio before it): per label a list of *mention* patterns, a list of *unmention*
patterns (look-alikes that must not count, e.g. "subcutaneous emphysema" for Emphysema),
then clause-scoped *negation* and *uncertainty* triggers. The phrases were written for this
project against how radiologists write (IU and MIMIC style); none are copied.

Every entry is a regular-expression fragment over lower-cased text with de-identification
tokens removed. ``labeler.py`` joins each list into one compiled alternation, bounded so a
fragment never matches inside a longer word; ``\\w*`` suffixes cover plurals and adjective
forms (``atelecta\\w*`` = atelectasis, atelectases, atelectatic).
"""

from __future__ import annotations

# Building blocks used inside several patterns.
_DEG = (  # degree / time words between a structure and its state, up to three of them
    r"(?:(?:very |only )?(?:mild|mildly|moderate|moderately|marked|markedly|severe|severely|slight|slightly"
    r"|minimal|minimally|significant|significantly|substantial|substantially|massive|massively|somewhat"
    r"|stable|stably|again|persistent|persistently|still|chronic|chronically|now|newly|new|progressively"
    r"|increasingly|further|more|less|overall|diffuse|diffusely|globally|grossly|at least|possibly"
    r"|probably|likely|questionably|perhaps|borderline|at|near)[, ]+){0,3}"
)
_HEART = r"(?:heart|heart size|heart shadow|cardiac (?:silhouettes?|shadow|contours?|size|diameter|outline|borders?))"
_MEDIASTINUM = (
    r"(?:(?:superior )?mediastinum|mediastinal (?:silhouette|contours?|shadow|width|structures)"
    r"|cardiomediastinal (?:silhouettes?|contours?|shadow|structures|width|size)|mediastinal and hilar contours)"
)
_BE = r"(?:is|are|appears?|remains?|was|were|seems?|looks?|has become|have become|has been|have been)"

# "pulmonary vascular engorgement appears within limits of normal": a normal statement, not Edema.
_VESSELS_NORMAL = (
    r"(?:pulmonary )?vascular (?:engorgement|congestion|prominence) (?:appears? |is |are )?"
    r"within (?:the )?(?:limits of normal|normal limits)"
)

# ---------------------------------------------------------------- mentions
MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        r"atelecta\w*",
        r"(?:lobar|lobe|segmental|subsegmental|lung|lingular|basilar) collapse",
        r"collapse of (?:\w+ ){0,5}?(?:lob\w*|lungs?|lingula|segments?)",
        r"collapsed (?:\w+ ){0,2}(?:lob\w*|lungs?|lingula)",
        r"volume loss|loss of (?:lung )?volume",
        r"(?:plate|discoid|band)[- ]?like (?:opacit\w+|densit\w+|atelecta\w+)",
    ),
    "Consolidation": (r"consolidat\w*", r"air ?bronchograms?"),
    "Infiltration": (
        r"infiltrat\w*",
        r"interstitial (?:opacit\w+|prominence|markings?|pattern|process|thickening|changes?|densit\w+)",
        r"(?:increased|prominent|prominence of|coarse|coarsened|accentuated) (?:\w+ ){0,2}"
        r"(?:interstitial|lung|pulmonary|bronchovascular|reticular) markings?",
        r"reticul\w* (?:opacit\w+|pattern|markings?|densit\w+|changes?)",
        r"reticulonodular\w*|reticulation",
    ),
    "Pneumothorax": (
        r"pneumothora\w*|hydropneumothora\w*|ptx",
        r"pleural air(?: collections?)?",
        r"(?:apical|apicolateral) (?:pleural )?air(?: collections?)?",
        r"visceral pleural line",
    ),
    "Edema": (
        r"o?edema\w*",
        r"(?:congestive )?heart failure|chf|cardiac decompensation|fluid overload|volume overload",
        r"(?:pulmonary |central |pulmonary vascular |perihilar )?(?:vascular |venous )?congestion",
        r"cephaliz\w*|kerley (?:b )?lines?",
        r"indistinct\w* (?:of the )?(?:pulmonary )?vasculature",
        r"(?:pulmonary )?vascular (?:engorgement|indistinctness|redistribution)",
        r"engorge\w* (?:pulmonary )?(?:vessels|vasculature)",
    ),
    "Emphysema": (
        r"emphysema\w*|copd",
        r"chronic obstructive (?:pulmonary|lung|airways?) disease",
        r"hyper-?(?:expan|inflat|aerat|distend)\w*|hyper-?distention|over-?(?:inflat|expan)\w*",
        r"bullae|bullous|bulla|blebs?",
        r"flatten\w* (?:of )?(?:the )?(?:bilateral |posterior )?(?:hemi-?)?diaphragms?",
        r"(?:hemi-?)?diaphragms? (?:is |are )?flattened",
    ),
    "Fibrosis": (
        r"fibros\w*|fibrotic|fibronodular|fibrocalcific",
        r"interstitial lung disease|ild|uip|usual interstitial pneumonia",
        r"honeycomb\w*|traction bronchiectasis",
        r"scar|scars|scarring|cicatri\w*",
    ),
    "Effusion": (
        r"effusions?|hydrothora\w*|hydropneumothora\w*",
        r"(?:pleural|fissural|layering|loculated|subpulmonic) fluid",
        r"fluid (?:in|within|tracking (?:into|along)) the (?:\w+ ){0,2}(?:fissure|pleural space|costophrenic)",
        r"blunt\w* (?:of )?(?:the )?(?:\w+ ){0,3}(?:costophrenic|costodiaphragmatic|cp) (?:angles?|sulcus|sulci|recess\w*)",
        r"(?:costophrenic|costodiaphragmatic|cp) (?:angles? |sulcus |sulci )?(?:is |are )?(?:\w+ )?blunt\w*",
        r"meniscus",
    ),
    "Pneumonia": (r"pneumoni\w*|bronchopneumoni\w*|pneumonitis", r"infecti\w*", r"aspiration"),
    "Pleural_Thickening": (
        r"pleural thicken\w*",
        r"thicken\w* (?:of )?(?:the )?(?:\w+ ){0,2}pleura\w*",
        r"thickened (?:\w+ )?pleura\w*",
        r"pleural (?:plaques?|calcifications?|scarring|scar|reaction|fibrosis)",
        r"pleural[- ](?:parenchymal|based) (?:scarring|scar|thickening|opacit\w+|densit\w+)",
        r"pleuroparenchymal (?:scarring|scar|thickening|opacit\w+)",
        r"apical (?:pleural )?caps?|pleural caps?|apical (?:pleural )?capping|calcified pleura\w*",
    ),
    "Cardiomegaly": (
        r"cardiomegaly|cardiac (?:enlargement|megaly)|enlarged heart",
        r"enlarge\w* (?:of )?(?:the )?(?:cardiac|heart)(?: (?:silhouette|shadow|contour|size|border))?",
        r"(?:large|prominent|globular) (?:heart|cardiac silhouette|cardiac shadow)",
        _HEART
        + r" (?:"
        + _BE
        + r" )?"
        + _DEG
        + r"(?:enlarged|large|increased(?: in size)?|prominent|globular"
        r"|borderline(?: in size)?|(?:at )?(?:the )?upper limits?(?: of)? normal(?: in size)?|top[- ]normal(?: in size)?)",
        _HEART + r" " + _DEG + r"(?:enlarged|increased|enlargement)",
        r"(?:borderline|upper limits?(?: of)? normal|top[- ]normal) (?:\w+ )?(?:heart size|cardiac size|heart|cardiomegaly)",
        r"(?:left|right|bi) ?ventricular (?:enlargement|hypertrophy|prominence)",
        r"(?:left|right|bi) ?atri(?:al|um) (?:enlargement|prominence|is enlarged)",
        r"increased cardiothoracic ratio",
    ),
    "Nodule": (r"nodul\w*|micronodul\w*", r"coin lesions?"),
    "Mass": (r"mass|masses|masslike|mass-like", r"tumou?rs?|neoplasm\w*|carcinoma\w*|malignan\w*|cancer"),
    "Hernia": (r"herni\w*", r"bochdalek|morgagni"),
    "Lung Lesion": (r"lesions?", r"cavit\w*", r"metasta\w*"),
    "Fracture": (
        r"fractur\w*|fx|fxs",
        r"compression deformit\w*",
        r"(?:wedge|wedging) (?:deformit\w*|compression)",
        r"(?:callus|callous) formation",
    ),
    "Lung Opacity": (
        r"opaci\w*|opaque",
        r"densit(?:y|ies)",
        r"air ?-?space (?:disease|process|opacit\w+|filling)",
        r"alveolar (?:disease|process|filling|opacit\w+)",
        r"ground[- ]glass|hazy|haziness|streakiness",
        r"parenchymal (?:disease|process|abnormalit\w*)",
        r"streaky (?:\w+ )?(?:markings?|change)",
    ),
    "Enlarged Cardiomediastinum": (
        r"enlarged (?:the )?cardiomediastin\w*(?: (?:silhouette|contour)s?)?",
        r"cardiomediastinal (?:enlargement|widening|prominence)",
        _MEDIASTINUM
        + r" "
        + _BE
        + r" "
        + _DEG
        + r"(?:enlarged|enlarging|increased in size|large|prominent|widened|wide)",
        r"(?:widen\w*|enlarge\w*|prominen\w*|wide|dilat\w*) (?:of )?(?:the )?(?:superior )?(?:cardio)?mediastin\w*",
        r"(?:superior )?mediastinal (?:widening|enlargement|prominence|lipomatosis)",
        r"(?:mediastinal|hilar|paratracheal) (?:lymph ?adenopathy|adenopathy|lymph node enlargement)",
        r"lymph ?adenopathy|adenopathy",
    ),
    "Support Devices": (
        r"pace-?makers?|pacers?|aicds?|icds?|defibrillators?|(?:neuro)?stimulators?|generators?",
        r"(?:cardiac |dual[- ]chamber |single[- ]chamber |transvenous )?(?:pacing|pacer|defibrillator|icd|aicd) "
        r"(?:device|generator|leads?|wires?|unit)s?",
        r"leads|(?:pacer|pacemaker|pacing|cardiac|transvenous|epicardial|ventricular|atrial) lead",
        r"loop recorder|cardiac monitor|watchman|impella|closure device|occluder|bone anchor",
        r"piccs?(?: lines?)?|catheters?|swan[- ]ganz|port-?a-?caths?|mediports?",
        r"(?:central |venous |ij |jugular |subclavian |femoral |hickman |port |peripheral |pulmonary arter\w* "
        r"|hemodialysis |dialysis |pleural |pigtail |indwelling )+(?:catheters?|lines?)",
        r"(?:power|chest|chest wall|infusion|subcutaneous|venous access) ?ports?",
        r"(?:endotracheal|et|ett|tracheostomy|trach|nasogastric|ng|orogastric|og|feeding|dobhoff|dubhoff|enteric"
        r"|gastric|chest|thoracostomy|pleural|gastrostomy|nasoenteric|g|j) tubes?",
        r"tracheostomy|trach|intubat\w*|ett|ngt|ogt|dht",
        r"lines? and tubes?|tubes? and lines?|sheaths?|introducers?|cordis",
        r"sternotom\w*|sternal (?:wires?|sutures?|cerclage)|cabg",
        r"(?:surgical|vascular|axillary|mediastinal|postsurgical|post-surgical) clips?",
        r"(?:surgical )?staples?|suture (?:lines?|material)|stents?",
        r"(?:prosthetic|mechanical|artificial) (?:\w+ )?valves?",
        r"(?:aortic |mitral |tricuspid )?valve (?:replacement|prosthesis|repair|annuloplasty)|annuloplasty ring",
        r"lvad|iabp|intra-?aortic balloon(?: pump)?",
        r"(?:ecg|ekg|monitoring|telemetry|cardiac monitoring) (?:leads?|wires?|pads?|electrodes?)|electrodes?",
        r"(?:orthopedic |surgical |fixation |spinal |fusion |cervical |thoracic |lumbar )*hardware",
        r"(?:fixation|fusion) (?:plates?|screws?|rods?|wires?|devices?)|(?:spinal|thoracolumbar|cervical) fusion",
        r"arthroplasty|prosthesis|prostheses|vertebroplasty|kyphoplasty",
        r"drains?|(?:embolization )?coils?|ivc filter|vascular graft",
        r"(?:implanted|medical|support|cardiac|implantable) devices?",
    ),
}

# Look-alikes that must not count as a mention of the label (an unmention span hides mentions inside it).
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (r"(?:vertebral|vertebra|vertebral body|body height) collapse",),
    "Edema": (
        r"(?:soft[- ]tissue|subcutaneous|chest wall|extremity|peripheral|pedal|leg|scalp|facial) o?edema",
        r"o?edema (?:of|in) the (?:soft tissues?|chest wall|extremit\w+|legs?)",
        r"(?:nasal|sinus|mucosal) congestion",
        _VESSELS_NORMAL,
    ),
    "Emphysema": (
        r"(?:subcutaneous|soft[- ]tissue|mediastinal|interstitial|chest wall|surgical) emphysema",
        r"emphysema (?:of|in|within) the (?:soft tissues?|chest wall|neck)",
    ),
    "Fibrosis": (
        r"pleural(?:[- ]parenchymal| based)? (?:scarring|scars?|fibrosis)|pleuroparenchymal (?:scarring|scars?)",
        r"(?:skin|surgical|sternotomy|incision\w*) scars?|cystic fibrosis",
    ),
    "Effusion": (r"(?:pericardial|joint|knee|shoulder|glenohumeral|subdeltoid) effusions?",),
    "Pneumonia": (
        r"aspiration (?:precautions|risk)",
        r"(?:urinary tract|wound|skin|soft tissue|line|catheter) infections?",
        r"(?:(?:prior|old|previous|remote|healed|chronic|sequelae? of|residuals? of) )?(?:granulomatous|tuberculous|fungal)"
        r" (?:infections?|infectious process)",
        r"(?:prior|old|previous|remote|healed|sequelae? of|residuals? of|evidence of previous) infections?",
    ),
    "Nodule": (
        r"(?:thyroid|thyroid gland|breast|skin|lymph) nodul\w*",
        r"nodul\w* (?:of|in) the (?:thyroid|breast|skin)",
    ),
    "Mass": (
        r"mass effect|(?:body|muscle|bone|fat) mass",
        r"(?:breast|prostate|colon|colorectal|renal|kidney|thyroid|skin|bladder|ovarian|pancreatic|cervical|uterine)"
        r" (?:cancer|carcinoma|tumou?r)",
        r"history of (?:\w+ ){0,2}(?:cancer|carcinoma|malignancy|tumou?r|neoplasm)",
        r"(?:risk|at high|high risk|screening) (?:\w+ )?(?:for|of) (?:lung )?(?:cancer|malignancy)",
    ),
    "Hernia": (
        r"(?:dis[ck]|disk|inguinal|umbilical|ventral|incisional|abdominal wall|nucleus pulposus) herni\w*",
        r"herni\w* (?:of|at) the (?:\w+ ){0,2}(?:dis[ck]|disks?|spine)",
    ),
    "Lung Lesion": (
        r"(?:bon\w+|osseous|lytic|blastic|sclerotic|skin|cutaneous|liver|hepatic|renal|brain|spine|spinal|vertebral"
        r"|osteolytic|osteoblastic|expansile|rib|bony|soft tissue|breast|thyroid|chest wall|coin) lesions?",
        r"lesions? (?:of|in|within) the (?:\w+ ){0,2}(?:bones?|spine|ribs?|liver|humerus|clavicle|scapula|vertebra\w*"
        r"|soft tissues?|thyroid)",
        r"(?:oral|nasal|sinus|peritoneal|abdominal|pericardial|cardiac|mediastinal|thoracic|pleural|chest|body|joint) cavit\w*",
        r"(?:bone|osseous|skeletal|osteoblastic|osteolytic|brain|hepatic|liver|bony) metasta\w*",
        r"metasta\w* (?:to|in|of) the (?:\w+ ){0,2}(?:bones?|spine|liver|brain|ribs?|skeleton)",
    ),
    "Fracture": (r"fracture (?:fixation|repair) hardware",),
    "Lung Opacity": (
        r"(?:bone|bony|osseous|mineral|breast|soft[- ]tissue|metallic|metal|calcific|calcium|fat|fluid|water) densit(?:y|ies)",
        r"(?:decreased|increased|normal) (?:bone |bony )?(?:mineral )?densit(?:y|ies)|densit(?:y|ies) of the (?:bones?|breast)",
        r"(?:breast|nipple|soft[- ]tissue|contrast|metallic|metal|foreign body|skin) (?:opacit\w+|shadows?)",
        r"opaci\w* (?:projecting|projects|overlying|overlies|from) (?:over )?(?:the )?(?:\w+ ){0,2}"
        r"(?:nipple|breast|skin|soft tissues?|clothing|button)",
    ),
    "Enlarged Cardiomediastinum": (
        r"(?:axillary|calcified|supraclavicular|cervical) (?:lymph ?adenopathy|adenopathy)",
    ),
    "Support Devices": (
        r"(?:foley|urinary|suprapubic|rectal|bladder) catheters?",
        r"(?:biliary|ureteral|renal|esophageal|coronary|coronary artery) stents?|(?:biliary|pancreatic) drains?",
        r"(?:(?:surgical|postsurgical|vascular) )?(?:clips?|staples?) (?:in|of|overlying) the (?:\w+ ){0,2}(?:abdomen|gallbladder|right upper quadrant|neck)",
        r"(?:gallbladder|cholecystectomy) (?:surgical )?clips?",
        r"(?:hip|knee|nasal|dental|breast) (?:arthroplasty|prosthes\w*|implants?|appliance|hardware)",
        r"(?:x-?ray|power|pulse|electrical) generators?",
    ),
}

# Statements that report a label as normal without a negation word (negative mentions).
_NORMAL = (
    r"(?:(?:is|are|appears?|remains?) )?(?:again |stable and |stable |stably |overall |otherwise )?"
    r"(?:normal|within normal limits|within the normal (?:size )?range|unremarkable|normal in (?:size|contour|appearance)"
    r"(?: and (?:contour|shape|configuration))?|of normal size|not (?:\w+ )?(?:enlarged|widened))"
)
NORMAL_FINDINGS: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        r"(?:heart|heart size|cardiac (?:size|silhouette|contours?|shadow))(?: and (?:mediastin\w*|cardiomediastin\w*"
        r"|pulmonary vascula\w*|hilar|lungs?)(?: (?:contours?|silhouettes?|size))?)?(?: (?:size|contours?|silhouette))? "
        + _NORMAL,
        r"normal(?:[- ]sized?)? (?:heart|cardiac|cardiomediastinal)(?: (?:size|silhouette|contours?|shadow|outline))?",
        r"(?:heart|cardiac silhouette) (?:is )?(?:of )?normal (?:size|limits)",
        r"(?:heart|cardiac) and (?:cardio)?mediastin\w*(?: (?:contours?|silhouettes?|size))? " + _NORMAL,
        r"cardiomediastinal (?:silhouettes?|contours?|shadow|structures|size) " + _NORMAL,
    ),
    "Enlarged Cardiomediastinum": (
        _MEDIASTINUM
        + r"(?: and (?:hilar|cardiac|heart|pulmonary vascula\w*)(?: (?:contours?|silhouettes?|size))?)? "
        + _NORMAL,
        r"(?:heart|cardiac) (?:size )?and mediastin\w*(?: (?:contours?|silhouettes?|size))? " + _NORMAL,
        r"normal (?:heart size and |cardiac and |heart and )?(?:cardiomediastinal|mediastinal)(?: (?:silhouette|contours?|width|size|shadow))?",
        r"normal mediastinum|unremarkable (?:cardio)?mediastin\w*(?: (?:silhouettes?|contours?|width|size|shadow))?",
    ),
    "Edema": (
        _VESSELS_NORMAL,
        r"(?:pulmonary )?vascula(?:rity|ture|r pattern) " + _NORMAL,
        r"normal (?:pulmonary )?vascula(?:rity|ture)",
    ),
    "Effusion": (
        r"(?:costophrenic|cp|costodiaphragmatic) (?:angles?|sulci|sulcus|recesses) (?:(?:is|are|remain) )?"
        r"(?:sharp|clear|preserved|normal|well[- ]defined)\w*",
        r"sharp (?:costophrenic|cp|costodiaphragmatic) (?:angles?|sulci|sulcus)",
    ),
}

# Whole-report normal statements: with no pathology positive or uncertain they make
# "No Finding" positive (rule 7 in labeler.py).
NORMAL_REPORT: tuple[str, ...] = (
    r"(?:no|without|negative for) (?:[\w,/-]+ ){0,8}(?:abnormalit\w*|disease|process|processes|findings?|pathology)",
    r"(?:normal|unremarkable|negative|clear) (?:(?:two|2|one|1|single|frontal|portable|upright|pa|ap|lateral|view"
    r"|and|radiographic|chest|x-?ray|film|radiograph|study|examination|exam)[, ]+){0,5}"
    r"(?:chest|study|examination|exam|radiographs?|film|x-?ray|cxr)",
    r"(?:chest|study|examination|exam|radiograph|cxr) (?:is |appears )?(?:normal|unremarkable|negative|within normal limits)",
    r"(?:lungs?|lung fields|lung parenchyma) (?:(?:are|is|appear|appears|remain|remains) )?(?:\w+ )?"
    r"(?:clear|normal|unremarkable|well[- ]aerated|(?:well[- ]|normally )?(?:expanded|inflated) and clear)",
    r"clear lungs?|within normal limits|(?:normal|healthy) (?:heart|lungs)",
    r"otherwise (?:\w+ )?clear|(?<![a-z,] )negative(?= ?(?:\.|$))",
    r"negative (?:for )?(?:acute )?(?:cardiopulmonary|chest|intrathoracic) (?:abnormalit\w*|disease|process|findings?)",
)

# ---------------------------------------------------------------- modifiers
# Negation before a mention: scope runs to the mention within the clause.
PRE_NEGATION: tuple[str, ...] = (
    r"no|not|without|absent|absence of|free of|clear of|negative for|negative|neither|nor|never|none",
    r"rather than|instead of|lack of|excluding|den(?:y|ies)",
    r"resolution of|resolved|resolving|disappearance of|removal of|removed|interval removal of",
)

# Negation after a mention ("pneumothorax is not seen", "effusion has resolved").
POST_NEGATION: tuple[str, ...] = (
    r"not (?:\w+ )?(?:seen|identified|visualized|visualised|evident|present|demonstrated|appreciated|detected|noted"
    r"|visible|apparent|observed|shown|found|re-?demonstrated)",
    r"no longer (?:\w+ )?(?:seen|identified|visualized|evident|present|demonstrated|appreciated|visible|apparent|noted)",
    r"resolved|removed|cleared|withdrawn|discontinued|absent|negative|unlikely",
    r"(?:is|are|was|were|been) (?:excluded|ruled out)",
)

# Uncertainty before a mention. Adjectives qualify the next noun phrase only: a comma ends them.
PRE_UNCERTAINTY_ADJ: tuple[str, ...] = (
    r"possible|possibly|probable|probably|likely|presumabl[ey]|presumed|suspected",
    r"questionable|questionably|equivocal|indeterminate|uncertain|borderline",
    r"(?:at the )?upper limits?(?: of)? normal|top[- ]normal",
    r"may|might|could",  # also when de-identification removed the verb: "may XXXX healing rib fracture"
)
PRE_UNCERTAINTY: tuple[str, ...] = (
    r"suspect|suspicious (?:for|of)|suspicion(?: for| of)?|concern\w* (?:for|of)|worrisome for",
    r"question\w*(?: of)?",
    r"(?:may|might|could) (?:\w+ )?(?:be|represent|reflect|indicate|relate to|be related to|be due to"
    r"|be secondary to|have|include|signify|obscure|mask|hide)",
    r"(?<!to )suggest\w*(?: of)?",
    r"(?:cannot|can ?not|can't) (?:be )?(?:entirely |completely |definitely |totally )?"
    r"(?:exclude[d]?|rule[d]? out|differentiate|distinguish)",
    r"difficult to (?:\w+ )?(?:exclude|rule out|distinguish)",
    r"not (?:entirely |completely |definitely |totally )?(?:exclude[d]?|ruled out)",
    r"differential (?:diagnosis )?(?:includes?|including|considerations?|would include)",
    r"r/o|rule out|evaluate for|evaluation for|assess for|assessment for|to exclude|correlate for",
    r"consider\w*|favou?r\w*|versus|vs\.?|and/or",
)

# Uncertainty after a mention ("pneumonia cannot be excluded", "infiltrate versus atelectasis").
POST_UNCERTAINTY: tuple[str, ...] = (
    r"(?:cannot|can ?not|can't|could not|not) (?:\w+ ){0,2}(?:exclude[d]?|rule[d]? out)",
    r"(?:is|are|would be|remains?) (?:\w+ )?(?:possible|likely|suspected|questioned|considered|a consideration"
    r"|not excluded|not ruled out|difficult to exclude|in the differential|favou?red|questionable|uncertain"
    r"|equivocal|indeterminate|probable|suggested)",
    r"(?:may|might|could) (?:\w+ )?(?:be present|exist|be seen|be considered)",
    r"versus|vs\.?|and/or",
)

# Phrases that contain a negation word but do not negate the finding next to them.
PSEUDO_NEGATION: tuple[str, ...] = (
    r"no (?:\w+ ){0,2}(?:change|changes|increase|decrease|worsening|improvement|progression|difference)",
    r"(?:without|with no) (?:\w+ ){0,2}(?:change|changes|increase|decrease|worsening|improvement|progression)",
    r"not (?:significantly |substantially |markedly )?(?:changed|increased|decreased|worsened|improved)",
    r"not only|no other|gram[- ]negative|negative pressure",
)

# Words that end a clause: negation and uncertainty do not reach across them.
CLAUSE_BREAKERS: tuple[str, ...] = (
    r"but|however|although|though|whereas|while|which|yet|otherwise|that is",
    r"except(?: for)?|aside from|apart from|other than|with the exception of",
    r"there (?:is|are|has been|have been|was|were)|in addition|additionally",
)

# Words that stop a pre-trigger's reach: "no effusion; lungs are hyperexpanded",
# "no definite effusion seen, hilar adenopathy".
SCOPE_STOPPERS: tuple[str, ...] = (
    r"is|are|was|were|has|have|remains?|appears?|demonstrates?|shows?|with",
    r"seen|identified|noted|present|demonstrated|visualized|appreciated",
    r"and (?:stable|unchanged|persistent)",
    r"(?<=, )(?:the|a|an|this|these|its)",  # a new subject after a comma: "no effusion, the heart is enlarged"
)

# Side words; a mention's laterality comes from these (rule 8 in labeler.py).
LEFT: tuple[str, ...] = (r"left|lt|left-sided|lingula\w*|retrocardiac|levo\w*",)
RIGHT: tuple[str, ...] = (r"right|rt|right-sided",)
BILATERAL: tuple[str, ...] = (
    r"bilateral\w*|bibasal|bibasilar\w*|biapical\w*|bihilar|both|b/l|bilat|diffuse\w*|multifocal",
    r"(?:left|right) (?:and|greater than|more than|>) (?:the )?(?:left|right)",
)

# Labels whose laterality is always "unspecified" (midline structures, whole-report labels).
NON_LATERAL: frozenset[str] = frozenset(
    {"Cardiomegaly", "Enlarged Cardiomediastinum", "No Finding", "Hernia"}
)
