"""The pipeline image, built once per test session with a real container engine, and how to run it.

`pipeline_image` builds kubeflow/Dockerfile through `make image` (podman, else docker) on
python:3.10-slim when the engine has it or can pull it, else on the local equivalent that
`make base-image` makes (debootstrap; needs root). The build is layer-cached by the engine, so
only the first session on a machine pays the full install. It skips only when no container
engine runs here (CI installs podman: .ci/run -> make container-tools).

With podman, containers run through kubeflow/image/runc-no-rlimits when the plain runtime
cannot set rlimits (sandboxes without CAP_SYS_RESOURCE).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = os.environ.get("TAXI_TEST_IMAGE", "localhost/taxi-pipeline:test")
LOCAL_BASE = "localhost/taxi-python:3.10-slim"
RUNC_WRAPPER = REPO / "kubeflow" / "image" / "runc-no-rlimits"


def _runs(argv: List[str]) -> bool:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=None)
def engine_name() -> str:
    """'podman' or 'docker' (whichever runs), or '' when none does."""
    if shutil.which("podman") and _runs(["podman", "info"]):
        return "podman"
    if shutil.which("docker") and _runs(["docker", "info"]):
        return "docker"
    return ""


@functools.lru_cache(maxsize=None)
def engine(image: str) -> List[str]:
    """argv prefix that runs containers of `image` here (podman with the rlimit-free runtime if needed)."""
    name = engine_name()
    if name != "podman":
        return [name]
    if _runs(["podman", "run", "--rm", "--network", "host", image, "true"]):
        return ["podman"]
    wrapped = ["podman", "--runtime", str(RUNC_WRAPPER)]
    if shutil.which("runc") and _runs(wrapped + ["run", "--rm", "--network", "host", image, "true"]):
        return wrapped
    raise RuntimeError(f"podman cannot run containers of {image}, neither plainly nor through {RUNC_WRAPPER}")


def _has_image(name: str, image: str) -> bool:
    return _runs([name, "image", "inspect", image])


def base_image(name: str) -> str:
    """python:3.10-slim when present; else the local equivalent when made before; else a pull; else make it."""
    if _has_image(name, "python:3.10-slim"):
        return "python:3.10-slim"
    if _has_image(name, LOCAL_BASE):
        return LOCAL_BASE
    if _runs([name, "pull", "-q", "python:3.10-slim"]):
        return "python:3.10-slim"
    if not (shutil.which("debootstrap") and os.geteuid() == 0):
        pytest.skip("python:3.10-slim cannot be pulled and no local base can be made here "
                    "(needs root and debootstrap: make container-tools)")
    subprocess.run(["make", "-C", str(REPO), "base-image", f"LOCAL_BASE={LOCAL_BASE}"], check=True)
    return LOCAL_BASE


@pytest.fixture(scope="session")
def pipeline_image() -> str:
    """The image built from this checkout (tag TEST_IMAGE)."""
    name = engine_name()
    if not name:
        pytest.skip("no container engine runs here: install podman (make container-tools) or docker")
    base = base_image(name)
    before = _image_id(name, TEST_IMAGE)
    build = subprocess.run(["make", "-C", str(REPO), "image", f"IMAGE={TEST_IMAGE}", f"BASE_IMAGE={base}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                           env={**os.environ, "ENGINE": name})
    if build.returncode != 0:
        raise AssertionError("make image failed:\n" + build.stdout[-4000:])
    if before and before != _image_id(name, TEST_IMAGE):
        # The tag moved to the new build: the old image would stay behind untagged, one per code change.
        subprocess.run([name, "rmi", before], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return TEST_IMAGE


def _image_id(name: str, image: str) -> str:
    found = subprocess.run([name, "image", "inspect", "--format", "{{.Id}}", image], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    return found.stdout.strip() if found.returncode == 0 else ""


def run_in_image(image: str, *command: str, extra: List[str] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    argv = engine(image) + ["run", "--rm", "--network", "host", *extra, image, *command]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          timeout=timeout)
