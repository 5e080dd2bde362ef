import io
import tarfile

import pytest

from cxrl.reports.sections import MAX_TOKENS, count_tokens
from cxrl.world.corpus import load_iu_reports, parse_iu_xml, xrv_data_file

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">Synthetic findings text.</AbstractText>
<AbstractText Label="IMPRESSION">{imp}</AbstractText>
</Abstract></Article></MedlineCitation></eCitation>"""


def _archive(path, impressions):
    with tarfile.open(path, "w:gz") as tar:
        for n, imp in enumerate(impressions, start=1):
            data = XML.format(n=n, imp=imp).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_parse_iu_xml():
    rid, fields = parse_iu_xml(XML.format(n=7, imp="Made up XXXX impression.").encode())
    assert rid == "CXR7" and fields["IMPRESSION"] == "Made up XXXX impression."
    with pytest.raises(ValueError, match="bad.xml"):
        parse_iu_xml(b"<not xml", "bad.xml")


def test_load_filters_and_cleans(tmp_path):
    path = tmp_path / "reports.tgz"
    _archive(path, ["Invented impression XXXX one.", "", "word " * 80, "Invented two."])
    reports = load_iu_reports(path)
    assert [r.report_id for r in reports] == ["CXR1", "CXR4"]
    assert reports[0].impression == "Invented impression one."


def test_real_corpus_is_read_from_the_installed_wheel():
    assert xrv_data_file("NLMCXR_reports.tgz").is_file()
    reports = load_iu_reports()
    assert len(reports) > 3500
    assert all(0 < count_tokens(r.impression) <= MAX_TOKENS for r in reports)
    assert len({r.report_id for r in reports}) == len(reports)


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.tgz"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="broken.tgz"):
        load_iu_reports(bad)
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        xrv_data_file("no_such_file")
