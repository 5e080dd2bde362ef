"""`cxrl label`: one JSON object per report on stdout, in input order."""

from __future__ import annotations

import json

import pytest

from cxrl import cli


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_label_texts_in_order(capsys):
    assert (
        cli.main(["label", "Small left pleural effusion.", "No acute disease.", "Possible pneumonia."]) == 0
    )
    assert _lines(capsys) == [
        {"Effusion": 1, "No Finding": 0},
        {"No Finding": 1},
        {"Pneumonia": -1, "No Finding": -1},
    ]


def test_label_file_one_report_per_line(tmp_path, capsys):
    path = tmp_path / "reports.txt"
    path.write_text("Stable cardiomegaly.\n\nRight PICC line. No pneumothorax.\n", encoding="utf-8")
    assert cli.main(["label", "--file", str(path)]) == 0
    assert _lines(capsys) == [
        {"Cardiomegaly": 1, "No Finding": 0},
        {},
        {"Pneumothorax": 0, "No Finding": 1, "Support Devices": 1},
    ]


def test_label_findings_flag_adds_laterality(capsys):
    assert cli.main(["label", "--findings", "Bibasilar atelectasis."]) == 0
    assert _lines(capsys) == [
        {
            "Atelectasis": {"value": 1, "laterality": "bilateral"},
            "No Finding": {"value": 0, "laterality": "unspecified"},
        }
    ]


def test_label_stdin(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Hiatal hernia.\nNo effusion.\n"))
    assert cli.main(["label", "--file", "-"]) == 0
    assert _lines(capsys) == [{"Hernia": 1, "No Finding": 0}, {"Effusion": 0, "No Finding": 1}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label"], "nothing to label"),
        (["label", "text", "--file", "x.txt"], "not both"),
        (["label", "--file", "/nonexistent/reports.txt"], "does not exist"),
    ],
)
def test_label_bad_input_fails_with_message(argv, message, caplog):
    assert cli.main(argv) == 2
    assert message in caplog.text


@pytest.mark.e2e
def test_cxrl_label_runs_as_a_command(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "reports.txt"
    path.write_text("XXXX left base density.\nNo acute cardiopulmonary abnormality.\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "cxrl.cli", "label", "--file", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"Lung Opacity": 1, "No Finding": 0},
        {"No Finding": 1},
    ]
