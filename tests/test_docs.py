"""The README and docs/ cite only files that exist (links and repository paths in backticks)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(
    r"`((?:cxrl|trainer|services|bench|deploy|tests|docs|protos)/[\w./-]+\.(?:py|yaml|md|json|proto))`"
)


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "services" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_link_and_cited_path_exists():
    missing = []
    for doc in _documents():
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if (
                not target.startswith(("http://", "https://", "mailto:"))
                and not (doc.parent / target).exists()
            ):
                missing.append(f"{doc.relative_to(ROOT)} links {target}")
        for path in PATH.findall(text):
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)} cites {path}")
    assert not missing, "\n".join(missing)


def test_the_checker_catches_a_missing_file(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see [here](nope.md) and `cxrl/not_a_module.py`")
    assert not (doc.parent / "nope.md").exists() and PATH.findall(doc.read_text()) == ["cxrl/not_a_module.py"]
