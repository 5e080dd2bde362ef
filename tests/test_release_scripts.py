"""The release targets stop at the first failing step (`make images`, `make compose-check`).

No Docker engine here: fake `docker`, `dockerd`, `debootstrap`, `apt-get` and `id` come first on
the PATH, and the fake docker logs every call it gets. A step made to fail (the engine does not
start, debootstrap fails, the image build fails) must end the target with a non-zero status, that
step's message as the last thing printed (before make's own `make: ***` line), and no later step
started: no image built after it, no `docker compose up`, no secrets written.

The targets run in a copy of the files they use (Makefile, deploy/docker, docker-compose.yml),
with the checkout's .venv linked in, so nothing they write lands in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = "cxrl/python:3.11-bookworm-debian"

FAKE_DOCKER = r"""#!/usr/bin/env bash
# a docker client without an engine behind it: logs each call; FAKE_* variables pick the answers
echo "$*" >> "$FAKE_LOG"
case "$1 ${2:-}" in
  "info "*)
    [ "${FAKE_ENGINE:-up}" = up ] && exit 0
    echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1 ;;
  "buildx version") echo "github.com/docker/buildx v0.0.0-fake"; exit 0 ;;
  "compose version") echo "Docker Compose version v2.0.0-fake"; exit 0 ;;
  "version "*) echo "28.2.2"; exit 0 ;;
  "image inspect")
    for have in ${FAKE_HAVE:-}; do [ "$3" = "$have" ] && exit 0; done
    echo "Error: No such image: $3" >&2; exit 1 ;;
  "buildx build")
    [ "${FAKE_BUILD:-ok}" = ok ] && exit 0
    echo "ERROR: failed to solve: process \"/bin/sh -c apt-get install redis-server\" did not complete successfully: exit code: 100" >&2
    exit 1 ;;
esac
exit 0
"""
FAKES = {
    "docker": FAKE_DOCKER,
    "dockerd": '#!/bin/sh\necho "dockerd $*" >> "$FAKE_LOG"\necho "failed to start daemon: fake" >&2\nexit 1\n',
    "debootstrap": (
        '#!/bin/sh\necho "debootstrap $*" >> "$FAKE_LOG"\n'
        'echo "E: Failed getting release file http://deb.debian.org/debian/dists/bookworm/Release" >&2\nexit 1\n'
    ),
    "apt-get": '#!/bin/sh\necho "apt-get $*" >> "$FAKE_LOG"\necho "E: fake apt-get" >&2\nexit 100\n',
    "id": '#!/bin/sh\n[ "$1" = -u ] && { echo 0; exit 0; }\nexec /usr/bin/id "$@"\n',  # root: the root-only steps run (faked)
}


@pytest.fixture
def release(tmp_path):
    """A copy of what the release targets use, fakes first on the PATH; run(target, **env)."""
    tree = tmp_path / "repo"
    (tree / "deploy").mkdir(parents=True)
    shutil.copytree(REPO / "deploy" / "docker", tree / "deploy" / "docker")
    for name in ("Makefile", "docker-compose.yml", "pyproject.toml"):
        shutil.copy2(REPO / name, tree / name)
    (tree / ".venv").symlink_to(REPO / ".venv")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, text in FAKES.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    log = tmp_path / "docker.log"

    def run(target: str, **env: str) -> tuple[int, list[str], list[str]]:
        log.write_text("")
        environ = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "FAKE_LOG": str(log), **env}
        for name in (
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
        ):  # under `make test`: a make of its own, not a sub-make
            environ.pop(name, None)
        # -o: the venv counts as up to date (nothing installed); PROTO_SRC empty: no stubs generated
        result = subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", target, "PROTO_SRC=", "LOCAL_BASE=1"],
            cwd=tree,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        lines = [x for x in result.stdout.splitlines() if x.strip()]
        assert lines and lines[-1].startswith("make: *** [Makefile:"), result.stdout
        return result.returncode, lines[:-1], log.read_text().splitlines()

    run.tree = tree
    return run


def _built(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith(("buildx build", "build ", "import", "run "))]


@pytest.mark.parametrize("target", ["images", "compose-check"])
def test_a_failing_debootstrap_stops_the_target_at_the_base_image(release, target):
    rc, lines, calls = release(target)
    assert rc != 0
    assert lines[-1] == (
        "base-image.sh: debootstrap of bookworm from http://deb.debian.org/debian failed (DEBIAN_MIRROR: another mirror)"
    ), lines
    assert lines[-2].startswith("E: Failed getting release file"), lines
    assert [c for c in calls if c.startswith("debootstrap ")], calls  # the step did run
    assert _built(calls) == [], calls  # no Redis image, no project image, no import after the failure
    assert not any("wheelhouse.sh" in x for x in lines), lines
    assert not [c for c in calls if c.startswith("compose ") and c != "compose version"], calls
    assert not (release.tree / "build" / "compose.env").exists()


def test_a_failing_build_stops_compose_check_before_the_stack(release):
    rc, lines, calls = release("compose-check", FAKE_HAVE=BASE, FAKE_BUILD="fail")
    assert rc != 0
    assert lines[-1].startswith("ERROR: failed to solve:"), lines
    assert "compose-check: -- images" in lines
    assert len([c for c in calls if c.startswith("buildx build")]) == 1, (
        calls
    )  # the Redis image, then nothing
    assert not any(x.startswith("compose-check: -- secrets") for x in lines), lines
    assert not [c for c in calls if c.startswith("compose ") and c != "compose version"], calls
    assert not (release.tree / "build" / "compose.env").exists()


@pytest.mark.parametrize("target", ["images", "compose-check"])
def test_an_engine_that_does_not_start_stops_the_target_first(release, target):
    rc, lines, calls = release(target, FAKE_ENGINE="down")
    assert rc != 0
    assert lines[-1] == "dockerd.sh: dockerd did not come up (its log above: build/dockerd.log)", lines
    dockerd = [c for c in calls if c.startswith("dockerd")]
    assert dockerd == ["dockerd ", "dockerd --storage-driver=vfs"], calls  # the default driver, then vfs
    assert not [
        c for c in calls if c.startswith(("image", "buildx", "compose ")) and c != "compose version"
    ], calls
    assert "apt-get" not in "".join(calls)  # dockerd was there: nothing installed


def test_every_script_that_reads_images_print_env_accepts_every_line_it_prints():
    """images.sh --print-env's keys and the case patterns of its readers (compose-check.sh,
    chaos-check.sh) stay one list: a key added to one side stopped chaos-check at its images step."""
    import re

    docker = REPO / "deploy" / "docker"
    printed = set(re.findall(r'echo "(CXRL_[A-Z_]+)=\$', (docker / "images.sh").read_text()))
    assert {"CXRL_IMAGE", "CXRL_REDIS_IMAGE"} <= printed
    for reader in ("compose-check.sh", "chaos-check.sh"):
        text = (docker / reader).read_text()
        assert 'images.sh" --if-missing --print-env' in text
        accepted = set(re.findall(r"(CXRL_[A-Z_]+)=\?\*", text))
        assert accepted == printed, f"{reader} accepts {sorted(accepted)}, images.sh prints {sorted(printed)}"
