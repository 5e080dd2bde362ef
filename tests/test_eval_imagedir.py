"""The images:DIR format: write, read back, group, and reject malformed directories."""

import pytest
import torch

from cxrl import imaging
from cxrl.eval import imagedir
from cxrl.eval.imagedir import Group


def make_groups():
    g = torch.Generator().manual_seed(0)
    return [
        Group("p/1", "Cardiomegaly.", torch.rand(3, 1, 32, 32, generator=g)),
        Group("p2", "No acute process, normal heart size.", torch.rand(2, 1, 40, 40, generator=g)),
    ]


def test_round_trip(tmp_path):
    writer = imagedir.ImageDirWriter(tmp_path / "imgs")
    for group in make_groups():
        writer.add(group)
    index = writer.close()
    assert index.name == "reports.csv"
    assert index.read_text().splitlines()[0] == "file,report,prompt_id"
    back = list(imagedir.iter_groups(tmp_path / "imgs"))
    assert [b.prompt_id for b in back] == ["p/1", "p2"]
    assert back[1].report == "No acute process, normal heart size."  # comma survives CSV quoting
    for orig, read in zip(make_groups(), back, strict=True):
        assert read.images.shape == orig.images.shape
        # PNG is 8-bit: equal to the uint8 rounding of the original
        torch.testing.assert_close(
            read.images, imaging.to_uint8(orig.images).float() / 255, rtol=0, atol=1e-6
        )
    assert imagedir.count_groups(tmp_path / "imgs") == 2
    assert len(list(imagedir.iter_groups(tmp_path / "imgs", max_prompts=1))) == 1
    assert not list((tmp_path / "imgs").glob(".reports-*"))  # temp file renamed into place


def write_csv(directory, rows, header="file,report,prompt_id"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reports.csv").write_text("\n".join([header, *rows]) + "\n")


def test_external_directory_rgb_and_grouping(tmp_path):
    from PIL import Image

    d = tmp_path / "ext"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (24, 24), (10, 200, 30)).save(d / name)
    write_csv(d, ["a.png,Edema.,x", "c.png,Effusion.,y", "b.png,Edema.,x"])
    groups = list(imagedir.iter_groups(d))
    assert [(g.prompt_id, g.images.shape[0]) for g in groups] == [("x", 2), ("y", 1)]
    assert groups[0].images.shape == (2, 1, 24, 24)


def test_score_style_csv_groups_by_report(tmp_path):
    # `cxrl score --reports` CSVs have no prompt_id: the report text is the group
    for name in ("a.png", "b.png", "c.png"):
        imaging.save_image(torch.rand(1, 16, 16), tmp_path / name)
    write_csv(tmp_path, ["a.png,Edema.", "b.png,Effusion.", "c.png,Edema."], header="file,report")
    groups = list(imagedir.iter_groups(tmp_path))
    assert [(g.prompt_id, g.report, g.images.shape[0]) for g in groups] == [
        ("Edema.", "Edema.", 2),
        ("Effusion.", "Effusion.", 1),
    ]


@pytest.mark.parametrize(
    "rows,header,match",
    [
        (["a.png,Edema.,x"], "file,text,prompt_id", "lacks columns"),
        (["a.png,,x"], "file,report,prompt_id", "empty"),
        (["missing.png,Edema.,x"], "file,report,prompt_id", "missing"),
        ([], "file,report,prompt_id", "no images"),
        (["a.png,Edema.,x", "a.png,Effusion.,x"], "file,report,prompt_id", "two different reports"),
    ],
)
def test_bad_directories_raise(tmp_path, rows, header, match):
    d = tmp_path / "bad"
    d.mkdir()
    imaging.save_image(torch.rand(1, 16, 16), d / "a.png")
    write_csv(d, rows, header)
    with pytest.raises(ValueError, match=match):
        list(imagedir.iter_groups(d))


def test_no_index_and_mixed_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match="reports.csv"):
        imagedir.read_index(tmp_path)
    imaging.save_image(torch.rand(1, 16, 16), tmp_path / "a.png")
    imaging.save_image(torch.rand(1, 20, 20), tmp_path / "b.png")
    write_csv(tmp_path, ["a.png,Edema.,x", "b.png,Edema.,x"])
    with pytest.raises(ValueError, match="differ in size"):
        list(imagedir.iter_groups(tmp_path))
