import stat

import pytest

from cxrl.infra.fileio import atomic_write_bytes, atomic_write_text


def test_writes_replace_the_file_whole_and_readably(tmp_path):
    path = tmp_path / "sub" / "report.html"
    assert atomic_write_text(path, "first\r\nline\n") == path
    assert path.read_bytes() == b"first\r\nline\n"  # line endings kept as given
    atomic_write_bytes(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
