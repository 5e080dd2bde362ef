from cxrl.world.sampling import OVERSAMPLE, findings_of, plan_split, split_reports


def _labels():
    # 40 reports: 30 normal, 6 with effusion, 3 with nodule, 1 with hernia (+ effusion)
    labels = [{"No Finding": 1} for _ in range(30)]
    labels += [{"Effusion": 1, "No Finding": 0} for _ in range(6)]
    labels += [{"Nodule": -1} for _ in range(3)]
    labels += [{"Hernia": 1, "Effusion": 1}]
    return labels


def test_split_is_disjoint_and_proportional():
    ids = [f"CXR{i}" for i in range(100)]
    s = split_reports(ids, 500, 100, seed=0)
    assert not set(s["train"]) & set(s["test"])
    assert len(s["train"]) + len(s["test"]) == 100
    assert len(s["test"]) == 17  # round(100 * 100 / 600)
    assert split_reports(ids, 500, 100, seed=0) == s
    assert split_reports(ids, 500, 100, seed=1) != s


def test_findings_of_ignores_negatives_and_no_finding():
    assert findings_of({"No Finding": 1, "Effusion": 0, "Nodule": -1, "Mass": 1}) == ["Nodule", "Mass"]


def test_plan_uses_every_report_then_oversamples_rare_findings():
    labels = _labels()
    reports = list(range(len(labels)))
    draws, summary = plan_split(reports, labels, 200, seed=0, split_code=0)
    assert len(draws) == 200
    base = [d for d in draws if d.repeat == 0]
    assert len({d.report for d in base}) == len(base) == 40  # every report once
    fill = draws[40:]
    assert all(findings_of(labels[d.report]) for d in fill)  # oversampling draws abnormal reports only
    # inverse-frequency weights: the single hernia report is drawn about as often as all nodule reports
    hernia = sum(labels[d.report].get("Hernia") == 1 for d in fill)
    assert hernia > 0.25 * len(fill)
    assert summary["base_draws"] == 40 and summary["oversampled_draws"] == 160
    # repeats are numbered per report
    seen = {}
    for d in draws:
        assert d.repeat == seen.get(d.report, 0)
        seen[d.report] = d.repeat + 1


def test_plan_with_fewer_images_than_reports():
    labels = _labels()
    draws, summary = plan_split(list(range(40)), labels, 10, seed=3, split_code=1)
    assert len(draws) == 10
    assert summary["base_draws"] == 7  # ceil((1 - OVERSAMPLE) * 10)
    assert OVERSAMPLE == 0.35
    assert all(findings_of(labels[d.report]) for d in draws[7:])
