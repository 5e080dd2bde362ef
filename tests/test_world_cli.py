import csv
import json

import pytest
from PIL import Image

from cxrl.cli import main


@pytest.mark.e2e
def test_world_build_and_sheet_commands(tmp_path, capsys):
    out = tmp_path / "w"
    assert (
        main(
            [
                "world",
                "build",
                "--out",
                str(out),
                "--train",
                "12",
                "--test",
                "4",
                "--size",
                "48",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 16
    assert (out / "canonical.png").is_file() and (out / "sampling.json").is_file()
    with open(out / "metadata.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 16
    # a second build into the same place needs --force
    assert main(["world", "build", "--out", str(out), "--train", "2", "--test", "1", "--size", "48"]) == 2
    sheet = tmp_path / "sheet.png"
    assert main(["world", "sheet", str(out), "--out", str(sheet), "--per-row", "3"]) == 0
    with Image.open(sheet) as im:
        assert im.mode == "L" and im.width > 3 * 100


def test_sheet_rows(tiny_world, tmp_path):
    from cxrl.world.sheet import contact_sheet, pick_rows

    with open(tiny_world / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    sheet = pick_rows(rows, 4)
    assert sheet[0][0].startswith("Normal")
    assert all(not r["rendered"] for r, _ in sheet[0][1])
    titles = [t for t, _ in sheet]
    assert len(titles) == 20  # normals + every label except No Finding
    for title, tiles in sheet[1:]:
        label = title.rsplit(" (", 1)[0]
        assert all(any(x.startswith(label + ":") for x in r["rendered"].split("|")) for r, _ in tiles)
    path = contact_sheet(tiny_world, tmp_path / "s.png", per_row=4)
    with Image.open(path) as im:
        assert im.size[1] == 21 * (128 + 14)  # header, normals, 19 labels


def test_sheet_errors(tmp_path, tiny_world):
    from cxrl.world.sheet import contact_sheet

    with pytest.raises(FileNotFoundError, match="cxrl world build"):
        contact_sheet(tmp_path, tmp_path / "s.png")
    with pytest.raises(ValueError, match="per-row"):
        contact_sheet(tiny_world, tmp_path / "s.png", per_row=0)
