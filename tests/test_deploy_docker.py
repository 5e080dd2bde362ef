"""The Dockerfile (one image for the reward services and the trainer) and .dockerignore,
checked without a Docker engine, in seconds.

The real build and a real run of the compose stack are `make compose-check` (docs/deploy.md:
minutes, a Docker engine, the pre-release check). Here: the Dockerfile's structure as BuildKit's
own parser reads it (base image argument, non-root user, tini, health check, offline install
from the bind-mounted wheelhouse), the build context that .dockerignore leaves, and that the
project builds from exactly the files the Dockerfile's source stage copies, with the stub
generation step it runs.
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
DOCKERFILE = REPO / "Dockerfile"
KNOWN = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


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


def test_dockerfile_structure():
    unknown = {keyword for keyword, _ in instructions(DOCKERFILE)} - KNOWN
    assert not unknown, f"not Dockerfile instructions: {unknown}"  # the parser lets them through
    global_args, *built = stages(DOCKERFILE)
    base = dict(a.split("=", 1) for k, a in global_args if k == "ARG")["BASE_IMAGE"]
    assert base == "python:3.11-slim-bookworm", f"default base image: {base}"
    assert all(stage[0][1].startswith("${BASE_IMAGE}") for stage in built), "the base is one argument"
    final = dict((k, a) for k, a in built[-1] if k in ("USER", "HEALTHCHECK", "CMD", "WORKDIR", "ENTRYPOINT"))
    uid = final["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "run as a non-root numeric user (Kubernetes runAsNonRoot)"
    assert f"--uid {uid}" in " ".join(a for k, a in built[-1] if k == "RUN"), (
        "the user must exist in the image"
    )
    check = json.loads(final["HEALTHCHECK"][final["HEALTHCHECK"].index("[") :])
    assert check[:3] == ["CMD", "python", "/app/healthcheck.py"], check
    keywords = [k for k, _ in built[-1]]
    assert keywords.index("USER") < keywords.index("CMD")
    # tini as PID 1 reaps what Ray leaves behind and forwards SIGTERM to cxrl alone, which stops
    # Serve and Ray in order (with `tini -g` the whole process group got it, and the services'
    # container exited 1 after 36 s in compose-check)
    assert json.loads(final["ENTRYPOINT"]) == ["/usr/bin/tini", "--"]
    assert "tini" in " ".join(a for k, a in built[-1] if k == "RUN")
    ports = " ".join(a for k, a in built[-1] if k == "EXPOSE").split()
    assert {"9000", "8000"} == set(ports), "only the reward API: Ray's own ports are not advertised"
    cmd = json.loads(final["CMD"])
    assert cmd[:2] == ["cxrl", "serve"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", (
        "inside a container the proxies must bind all interfaces"
    )
    config = cmd[cmd.index("--config") + 1]
    copied = [a.split()[-2:] for k, a in built[-1] if k == "COPY" and "--from=" not in a]
    assert [f"{Path(config).parent}", f"/app/{Path(config).parent}"] in copied and final["WORKDIR"] == "/app"
    assert (REPO / config).is_file()
    env = " ".join(a for k, a in built[-1] if k == "ENV").split()  # the parser gives KEY VALUE pairs
    assert dict(zip(env[::2], env[1::2], strict=True))["RAY_AUTH_MODE"] == "token"


def test_build_installs_offline_from_the_mounted_wheelhouse():
    """Every pip install of the build reads only build/wheelhouse, mounted (never copied)."""
    _, source, build, runtime = stages(DOCKERFILE)
    env = " ".join(a for k, a in build if k == "ENV").split()
    env = dict(zip(env[::2], env[1::2], strict=True))
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_FIND_LINKS"] == "/wheels"
    runs = [a for k, a in build if k == "RUN"]
    assert runs and all("--mount=type=bind,source=build/wheelhouse,target=/wheels" in a for a in runs)
    assert all("--index-url" not in a and "--extra-index-url" not in a for a in runs)
    assert 'test "$(cat /wheels/VARIANT)" = "$VARIANT"' in runs[0], (
        "a wheelhouse of the other variant is refused"
    )
    for stage in (source, build, runtime):
        for keyword, args in stage:
            assert not (keyword in ("COPY", "ADD") and "wheelhouse" in args), (
                "the wheels must not become a layer"
            )
    # the venv is the one big layer of the image: everything after it is metadata
    keywords = [k for k, _ in runtime]
    last_copy = max(i for i, k in enumerate(keywords) if k in ("COPY", "RUN", "ADD", "WORKDIR"))
    assert "--from=build" in runtime[last_copy][1] and "/opt/venv" in runtime[last_copy][1]


def test_wheelhouse_script_refuses_an_unknown_variant(tmp_path):
    result = subprocess.run(
        [str(REPO / "deploy" / "docker" / "wheelhouse.sh"), "rocm"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "VARIANT must be cpu or cuda, got 'rocm'" in result.stderr


def test_dockerignore_keeps_the_context_to_what_the_images_need(context):
    assert {"pyproject.toml", "README.md", "deploy/healthcheck.py", "services/configs/serve-cpu.yaml"} <= set(
        context
    )
    assert any(p.startswith("protos/") and p.endswith(".proto") for p in context)
    for prefix in (".git/", ".venv/", "data/", "out/", "runs/", "tests/", "models/"):
        assert not any(p.startswith(prefix) for p in context), prefix
    assert not any(p.endswith(("_pb2.py", "_pb2_grpc.py", ".pyc")) for p in context)
    assert not any(p.startswith(("build/tools/", "build/compose", "deploy/base/secrets/")) for p in context)
    for source in copied_sources():
        assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in context), (
            f"COPY {source} is not in the build context"
        )


def copied_sources(stage: str | None = None) -> list[str]:
    """Context paths that COPY instructions (of one stage, or all) take."""
    sources = []
    for built in stages(DOCKERFILE)[1:]:
        if stage is not None and f"AS {stage}" not in built[0][1]:
            continue
        for keyword, args in built:
            if keyword == "COPY" and "--from=" not in args:
                sources += [a for a in args.split() if not a.startswith("--")][:-1]
    return sources


def test_dockerignore_matcher_follows_docker_rules():
    rules = [
        (False, re.compile("^.*$")),
        (True, re.compile("^cxrl/.*$")),
        (False, re.compile("^(?:.*/)?__pycache__$")),
    ]
    assert in_context("cxrl/a.py", rules)
    assert not in_context("cxrl/__pycache__/a.pyc", rules)
    assert not in_context("notes.txt", rules)


@pytest.mark.slow  # builds the wheel
def test_project_builds_from_the_docker_context(context, tmp_path):
    """What the build stage does: the source stage's files, stubs generated, the wheel built."""
    src = tmp_path / "src"
    taken = copied_sources("source")
    assert {"pyproject.toml", "protos", "cxrl", "services", "trainer"} <= set(taken)
    for rel in context:
        if any(rel == t or rel.startswith(t + "/") for t in taken):
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


def test_paths_the_stack_runs_exist_in_the_image():
    """The health check that compose and the Kubernetes init containers call is where the image puts it."""
    import yaml
    from test_deploy_render import find, render_overlay

    destinations = {args.split()[-1] for keyword, args in stages(DOCKERFILE)[-1] if keyword == "COPY"}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = 0
    for name, service in compose["services"].items():
        if name.startswith(("rewards", "trainer")):
            assert service["image"].startswith("${CXRL_IMAGE"), name
            script = service["healthcheck"]["test"][2]
            assert script in destinations, (name, script)
            checked += 1
    assert checked == 4
    job = find(render_overlay("cpu"), "Job", "cxrl-trainer")["spec"]["template"]["spec"]
    (init,) = job["initContainers"]
    assert init["image"].startswith("cxrl/cxrl:") and init["command"][1] in destinations


@pytest.mark.parametrize("target, script", [("images", "images.sh"), ("compose-check", "compose-check.sh")])
def test_make_targets_run_the_deploy_scripts(target, script):
    """`make images` / `make compose-check` call the scripts with the variables they read."""
    out = subprocess.run(
        ["make", "-n", target, "LOCAL_BASE=1", "VARIANT=cuda", "DOCKER=/usr/bin/docker"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if f"deploy/docker/{script}" in line)
    for setting in ('DOCKER="/usr/bin/docker"', "VARIANT=cuda", "LOCAL_BASE=1", "IMAGE_TAG=0.1.0"):
        assert setting in line, (setting, line)


def test_deploy_scripts_are_executable_bash_without_syntax_errors():
    scripts = sorted((REPO / "deploy").rglob("*.sh"))
    assert {p.name for p in scripts} >= {
        "images.sh",
        "compose-check.sh",
        "wheelhouse.sh",
        "base-image.sh",
        "dockerd.sh",
        "secrets.sh",
    }
    for path in scripts:
        assert os.access(path, os.X_OK), f"{path} is not executable"
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"
