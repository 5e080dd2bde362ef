"""services/Dockerfile, trainer/Dockerfile and .dockerignore, checked without a Docker daemon.

These machines have no Docker daemon and no registry for base images, so the images are
not built here. What can be checked is checked for real: the Dockerfiles' structure
(pinned base, non-root user, health check), the shell of their variant-selection steps
(run with a stub ``pip`` that records what it was asked to install), the build context
that .dockerignore leaves, and that the project builds and installs from exactly that
context with the stub-generation step the Dockerfiles run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dockerfile
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"services": REPO / "services" / "Dockerfile", "trainer": REPO / "trainer" / "Dockerfile"}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
         "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}  # fmt: skip


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs from BuildKit's own Dockerfile parser (the `dockerfile`
    wheel wraps it), so a syntax error fails here as it would in `docker build`. Exec-form
    arguments come back as their JSON list, flags first."""
    out = []
    for command in dockerfile.parse_file(str(path)):
        value = json.dumps(list(command.value)) if command.json else " ".join(command.value)
        out.append((command.cmd.upper(), " ".join([*command.flags, value])))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = [[]]
    for keyword, args in instructions(path):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result  # result[0]: global ARGs before the first FROM


def ignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").lstrip("/")
        regex = "".join(
            "(?:.*/)?"
            if tok == "**/"
            else ".*"
            if tok == "**"
            else "[^/]*"
            if tok == "*"
            else "[^/]"
            if tok == "?"
            else re.escape(tok)
            for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern)
        )
        rules.append((negate, re.compile(f"^{regex}$")))
    return rules


def in_context(rel: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return not excluded


def build_context() -> list[str]:
    """Relative paths of the files `docker build .` would send."""
    rules = ignore_rules()
    reopened = [r.pattern for neg, r in rules if neg]
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        # prune excluded folders that no `!` pattern can reopen (.git, .venv, data, ...)
        dirs[:] = [
            d
            for d in dirs
            if in_context(rel_root + d, rules)
            or any(p.startswith(f"^{re.escape(rel_root + d)}/") for p in reopened)
        ]
        files += [rel_root + n for n in names if in_context(rel_root + n, rules)]
    return sorted(files)


@pytest.fixture(scope="module")
def context() -> list[str]:
    return build_context()


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_structure(name):
    path = DOCKERFILES[name]
    unknown = {keyword for keyword, _ in instructions(path)} - KNOWN
    assert not unknown, f"not Dockerfile instructions: {unknown}"  # the parser lets them through
    global_args, *built = stages(path)
    base = dict(a.split("=", 1) for k, a in global_args if k == "ARG")["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), (
        f"pin the base image to a patch release: {base}"
    )
    assert all(stage[0][1].startswith("${PYTHON_IMAGE}") for stage in built)
    final = dict((k, a) for k, a in built[-1] if k in ("USER", "HEALTHCHECK", "CMD", "WORKDIR"))
    uid = final["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "run as a non-root numeric user (Kubernetes runAsNonRoot)"
    assert f"--uid {uid}" in " ".join(a for k, a in built[-1] if k == "RUN"), (
        "the user must exist in the image"
    )
    check = json.loads(final["HEALTHCHECK"][final["HEALTHCHECK"].index("[") :])
    assert check[:3] == ["CMD", "python", "/app/healthcheck.py"], check
    keywords = [k for k, _ in built[-1]]
    assert keywords.index("USER") < keywords.index("CMD")
    if name == "services":
        ports = " ".join(a for k, a in built[-1] if k == "EXPOSE").split()
        assert {"9000", "8000"} <= set(ports)
        cmd = json.loads(final["CMD"])
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0", (
            "inside a container the proxies must bind all interfaces"
        )
        config = cmd[cmd.index("--config") + 1]
        copied = [a.split()[-2:] for k, a in built[-1] if k == "COPY" and "--from=" not in a]
        assert [f"{Path(config).parent}", f"/app/{Path(config).parent}"] in copied and final[
            "WORKDIR"
        ] == "/app"
        assert (REPO / config).is_file()


def test_both_images_share_one_build_stage():
    """Same dependencies and install steps: the two files must not drift apart."""
    assert stages(DOCKERFILES["services"])[1] == stages(DOCKERFILES["trainer"])[1]


def run_dependency_steps(variant: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the build stage's dependency RUN lines with a stub pip that logs its arguments."""
    build = stages(DOCKERFILES["services"])[1]
    args = dict(a.split("=", 1) for k, a in build if k == "ARG" and "=" in a)
    steps = [a for k, a in build if k == "RUN" and ("tomllib" in a or "VARIANT" in a)]
    assert len(steps) == 2, steps
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/pip.log\n')
    (bin_dir / "pip").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    script = " && ".join(step.replace("/tmp/", f"{tmp_path}/") for step in steps)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VARIANT": variant, "TORCH_CPU_INDEX": args["TORCH_CPU_INDEX"]}
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_cpu_variant_installs_torch_from_the_cpu_index(tmp_path):
    result = run_dependency_steps("cpu", tmp_path)
    assert result.returncode == 0, result.stderr
    torch_pins = (tmp_path / "torch.txt").read_text().split()
    assert torch_pins == ["torch==2.14.1", "torchvision==0.29.1"]  # as pinned in pyproject.toml
    first, second = (tmp_path / "pip.log").read_text().splitlines()
    assert first == f"install -r {tmp_path}/torch.txt --index-url {TORCH_CPU_INDEX}"
    assert second == f"install -r {tmp_path}/requirements.txt"
    requirements = (tmp_path / "requirements.txt").read_text().split()
    assert "ray[serve]==2.60.0" in requirements and "torch==2.14.1" in requirements


def test_cuda_variant_uses_the_default_index_and_bad_variants_fail(tmp_path):
    (tmp_path / "cuda").mkdir()
    result = run_dependency_steps("cuda", tmp_path / "cuda")
    assert result.returncode == 0, result.stderr
    first = (tmp_path / "cuda" / "pip.log").read_text().splitlines()[0]
    assert "--index-url" not in first and first.startswith("install -r")
    (tmp_path / "rocm").mkdir()
    result = run_dependency_steps("rocm", tmp_path / "rocm")
    assert result.returncode != 0
    assert "VARIANT must be cpu or cuda, got 'rocm'" in result.stderr


def test_dockerignore_keeps_the_context_to_what_the_images_need(context):
    assert {"pyproject.toml", "README.md", "deploy/healthcheck.py", "services/configs/serve-cpu.yaml"} <= set(
        context
    )
    assert any(p.startswith("protos/") and p.endswith(".proto") for p in context)
    for prefix in (".git/", ".venv/", "data/", "out/", "runs/", "tests/", "models/"):
        assert not any(p.startswith(prefix) for p in context), prefix
    assert not any(p.endswith(("_pb2.py", "_pb2_grpc.py", ".pyc")) for p in context)
    for path in DOCKERFILES.values():
        for keyword, args in instructions(path):
            if keyword == "COPY" and "--from=" not in args:
                sources = [a for a in args.split() if not a.startswith("--")][:-1]
                for source in sources:
                    assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in context), (
                        f"{path.name}: COPY {source} is not in the build context"
                    )


def test_dockerignore_matcher_follows_docker_rules():
    rules = [
        (False, re.compile("^.*$")),
        (True, re.compile("^cxrl/.*$")),
        (False, re.compile("^(?:.*/)?__pycache__$")),
    ]
    assert in_context("cxrl/a.py", rules)
    assert not in_context("cxrl/__pycache__/a.pyc", rules)
    assert not in_context("notes.txt", rules)


def test_project_builds_from_the_docker_context(context, tmp_path):
    """What the build stage does: copy the context, generate stubs, build the wheel."""
    src = tmp_path / "src"
    for rel in context:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    protos = sorted(str(p.relative_to(src)) for p in (src / "protos").rglob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iprotos",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
    ]
    subprocess.run(cmd + protos, cwd=src, check=True)
    wheel_cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run(wheel_cmd + [str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("cxrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "cxrl/cli.py",
        "cxrl/reward/v1/reward_pb2.py",
        "cxrl/reward/v1/reward_pb2_grpc.py",
        "services/models.py",
        "trainer/__init__.py",
        "services/configs/serve-cpu.yaml",
        "services/configs/serve-gpu.yaml",
    ):
        assert required in names, f"the image would lack {required}"
    assets = {p for p in context if p.startswith("cxrl/assets/") and not p.endswith(".md")}
    assert assets <= names, f"default-world assets missing from the wheel: {sorted(assets - names)[:5]}"


def test_paths_the_stack_runs_exist_in_the_images():
    """The health check that compose and the Job call is where the images put it."""
    import yaml
    from test_deploy_render import DEPLOY, find, render

    destinations = {
        name: {args.split()[-1] for keyword, args in stages(path)[-1] if keyword == "COPY"}
        for name, path in DOCKERFILES.items()
    }
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        if "build" in service:
            image = "services" if "services/" in service["build"]["dockerfile"] else "trainer"
            script = service["healthcheck"]["test"][2]
            assert script in destinations[image], (image, script)
    job = find(render(DEPLOY / "overlays" / "cpu"), "Job", "cxrl-trainer")["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    assert init["image"].startswith("cxrl/trainer:") and init["command"][1] in destinations["trainer"]
