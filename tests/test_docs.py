"""What the docs, configs and comments cite exists: repository paths and ``module.name`` references.

Scanned: README.md, every package's README, docs/**/*.md, the trainer, RL-preset and serve configs
(YAML, comments included), and the comments and docstrings of cxrl/, services/, trainer/ and bench/.
A cited path (``cxrl/rl/anchor_ahead.py``, ``trainer/configs/``, ``cxrl/rl/presets/*.yaml``) must exist; a
cited name (``cxrl.rl.anchor_ahead.AnchorAhead``, ``cxrl.rl.sinks.PHASES``) must name a module, and then a
top-level name of that module, and then a member of that class. Names are resolved from the source
files (nothing is imported), so the check is fast and has no side effects.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cxrl", "services", "trainer", "bench")
PATH = re.compile(
    r"(?<![\w/.$<{-])((?:cxrl|trainer|services|bench|deploy|tests|docs|protos)/[\w./*-]*[\w*/])(?![\w:{<])"
)
NAME = re.compile(r"(?<![\w./-])((?:cxrl|services|trainer|bench)(?:\.[A-Za-z_]\w*)+)(?![\w/-])")
PROTO_PACKAGE = "cxrl.reward.v1"  # protobuf package (protos/), not a Python module
ENTRY_POINT_GROUPS = ("cxrl.commands",)  # pyproject.toml's entry-point groups
# docs/results record measurements with the commit that made them; the code they name may be gone
# since (the engine replaced these): cited there as it was, nowhere else
HISTORICAL = {"docs/results": {"cxrl.rl.ddpo.DDPOTrainer", "trainer.loop.TrainLoop", "bench.bench_epoch"}}


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted(ROOT.glob("*/README.md")), *sorted((ROOT / "docs").rglob("*.md"))]
    configs = [
        *sorted((ROOT / "trainer" / "configs").glob("*.yaml")),
        *sorted((ROOT / "cxrl").rglob("presets/*.yaml")),
        *sorted((ROOT / "services" / "configs").glob("*.yaml")),
    ]
    return docs + configs


def sources() -> list[Path]:
    return [
        p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    ]


def prose(path: Path) -> str:
    """The text of a document, or the comments and docstrings of a Python file (not its code)."""
    text = path.read_text()
    if path.suffix != ".py":
        return text
    parts = [
        t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def path_exists(cited: str, root: Path = ROOT) -> bool | None:
    """Whether a cited repository path exists; None when it is not a path (a name like ``deploy/x``)."""
    cited = cited.rstrip(".")
    last = cited.rstrip("/").rsplit("/", 1)[-1]
    if cited.count("/") == 1 and not cited.endswith("/") and "." not in last and "*" not in last:
        return None  # `deploy/cxrl-redis` (kubectl), `services/in-process` (a ratio): not a path
    return any(root.glob(cited.rstrip("/"))) if "*" in cited else (root / cited).exists()


@functools.cache
def _module_names(path: Path) -> dict[str, ast.AST | None]:
    """Top-level names of a module: classes (with their nodes), functions, assignments, imports."""
    names: dict[str, ast.AST | None] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = None
        elif isinstance(node, ast.Assign):
            names.update((t.id, None) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = None
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(((a.asname or a.name).split(".")[0], None) for a in node.names)
    return names


def _members(node: ast.ClassDef) -> set[str]:
    out = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(item.name)
        elif isinstance(item, ast.Assign):
            out.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            out.add(item.target.id)
    return out


def name_exists(cited: str, root: Path = ROOT) -> bool:
    """Whether ``pkg.module[.Name[.member]]`` resolves in the source tree."""
    cited = cited.rstrip(".")
    if cited in ENTRY_POINT_GROUPS:
        return True
    if cited.startswith(PROTO_PACKAGE):
        rest = cited[len(PROTO_PACKAGE) :].lstrip(".")
        protos = " ".join(p.read_text() for p in (root / "protos").rglob("*.proto"))
        return (
            not rest or re.search(rf"\b(?:service|message|rpc)\s+{rest.split('.')[0]}\b", protos) is not None
        )
    parts = cited.split(".")
    module = None
    for i in range(len(parts), 0, -1):  # the longest prefix that is a module or package
        base = root.joinpath(*parts[:i])
        if base.with_suffix(".py").is_file():
            module = base.with_suffix(".py")
        elif (base / "__init__.py").is_file():
            module = base / "__init__.py"
        if module is not None:
            rest = parts[i:]
            break
    if module is None:
        return False
    if not rest:
        return True
    names = _module_names(module)
    if rest[0] not in names:
        return False
    node = names[rest[0]]
    return len(rest) == 1 or not isinstance(node, ast.ClassDef) or rest[1] in _members(node)


def missing_citations(paths: list[Path], root: Path = ROOT) -> list[str]:
    missing = []
    for doc in paths:
        text = prose(doc)
        where = doc.relative_to(root)
        if doc.suffix == ".md":
            for target in re.findall(r"\]\(([^)#\s]+)\)", text):
                if (
                    not target.startswith(("http://", "https://", "mailto:"))
                    and not (doc.parent / target).exists()
                ):
                    missing.append(f"{where} links {target}")
        for cited in PATH.findall(text):
            if path_exists(cited, root) is False:
                missing.append(f"{where} cites the path {cited}")
        past = set().union(*(v for k, v in HISTORICAL.items() if str(where).startswith(k + "/")))
        for cited in NAME.findall(text):
            if cited not in past and not name_exists(cited, root):
                missing.append(f"{where} cites the name {cited}")
    return sorted(set(missing))


@pytest.mark.parametrize("kind", ["docs and configs", "comments and docstrings"])
def test_every_cited_path_and_name_exists(kind):
    missing = missing_citations(documents() if kind == "docs and configs" else sources())
    assert not missing, "\n".join(missing)


def test_the_checker_fails_on_what_does_not_exist(tmp_path):
    """The same checker over a copy of one real module and a document citing it, right and wrong."""
    (tmp_path / "cxrl" / "rl").mkdir(parents=True)
    for name in ("cxrl/__init__.py", "cxrl/rl/__init__.py", "cxrl/rl/sinks.py"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    doc = tmp_path / "README.md"
    good = "see `cxrl/rl/sinks.py`, cxrl.rl.sinks.PHASES, cxrl.rl.sinks.Sink.epoch and `cxrl/rl/`"
    doc.write_text(good)
    assert missing_citations([doc], tmp_path) == []
    doc.write_text(
        good + "; [here](nope.md), `cxrl/rl/anchor_ahead.py`, cxrl.rl.sinks.Nothing, "
        "cxrl.rl.sinks.Sink.fit, cxrl.models.generator.Policy"
    )
    assert missing_citations([doc], tmp_path) == [
        "README.md cites the name cxrl.models.generator.Policy",
        "README.md cites the name cxrl.rl.sinks.Nothing",
        "README.md cites the name cxrl.rl.sinks.Sink.fit",
        "README.md cites the path cxrl/rl/anchor_ahead.py",
        "README.md links nope.md",
    ]
    # comments and docstrings of a Python file are checked, its code is not
    src = tmp_path / "cxrl" / "rl" / "x.py"
    src.write_text('"""Uses cxrl.rl.gone."""\n\n# and `trainer/gone.py`\ntrainer = cxrl.rl.also_gone\n')
    assert missing_citations([src], tmp_path) == [
        "cxrl/rl/x.py cites the name cxrl.rl.gone",
        "cxrl/rl/x.py cites the path trainer/gone.py",
    ]
