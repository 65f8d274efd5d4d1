"""The layering contract (.importlinter) holds, and import-linter really catches an upward import.

Layers, top to bottom: pipeline > components > kubeflow > serving > trainer_module; each imports only
from those below it, and the model server's core imports neither its client nor its test fixtures.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "components", "kubeflow", "serving", "trainer_module")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy under test shadows the installed packages
    return subprocess.run([LINT_IMPORTS, "--config", str(root / ".importlinter"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_repository_keeps_its_layers():
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


@pytest.fixture()
def copy_of_the_code(tmp_path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.parametrize("module,upward,contract", [
    ("serving/util/errors.py", "from pipeline import configs", "One-way layers"),  # serving -> pipeline
    ("trainer_module/features.py", "import serving", "One-way layers"),  # the bottom layer importing up
    ("components/errors.py", "from pipeline.errors import UserError", "One-way layers"),  # a library using the CLI's error
    ("serving/core/manager.py", "from serving.testing import sample_models", "knows no client"),  # core -> fixtures
])
def test_an_upward_import_breaks_the_contract(copy_of_the_code, module, upward, contract):
    path = copy_of_the_code / module
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {upward}  # deliberately upward\n")
    done = _lint(copy_of_the_code)
    assert done.returncode != 0, done.stdout[-2000:]
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), done.stdout[-3000:]
    assert module.replace("/", ".")[:-3] in done.stdout  # the report names the offending module


def test_the_readme_layout_table_names_only_what_exists():
    """Every file or folder the README's layout table names is in the repository (and every package is named)."""
    import re

    text = (REPO / "README.md").read_text()
    table = text[text.index("## Layout"):text.index("\n## ", text.index("## Layout") + 1)]
    named = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        first, job = row.split("|")[1], row.split("|")[2]
        paths = re.findall(r"`([^`]+)`", first)
        base = Path(paths[0]).parent if "/" in paths[0].rstrip("/") else Path(".")
        for path in paths:
            candidate = REPO / path if "/" in path else REPO / base / path
            assert candidate.exists() or list(candidate.parent.glob(candidate.name)), f"README layout names {path}, which does not exist"
            named.add(Path(path).parts[0])
        folder = paths[0].rstrip("/")
        if paths[0].endswith("/") and folder in PACKAGES:  # sub-paths in the job column are inside that folder
            for sub in re.findall(r"`([a-z_]+(?:/[a-z_.]+)*/?|[a-z_]+\.py)`", job):
                if "." in sub or sub.endswith("/"):
                    assert (REPO / folder / sub).exists(), f"README layout names {folder}/{sub}, which does not exist"
    assert set(PACKAGES) <= named


def test_building_the_pipeline_loads_neither_tfx_v1_nor_every_tfx_component(tmp_path):
    """`tfx.v1` also imports TFX's Google Cloud extensions (google.cloud.aiplatform): ~2.6 s of every run's
    start (bench/RESULTS.md, 2026-12-01 (c)), so the pipeline imports TFX's own modules instead. And
    `tfx.components`' package __init__ imports all sixteen TFX components (InfraValidator's Kubernetes
    client, the Tuner's keras_tuner...): ~2.4 s more (2026-12-02 (a)), so it runs only when a name of the
    package is used (kubeflow.tfx_internals.defer_tfx_components), which must still work."""
    unused = ("tfx.v1", "google.cloud.aiplatform", "tfx.components.infra_validator", "keras_tuner",
              "tfx.components.bulk_inferrer", "tfx.components.tuner")
    code = ("import sys\n"
            "from pipeline import configs, local_runner\n"
            "from pipeline.pipeline import create_pipeline\n"
            "from tfx.orchestration.local.local_dag_runner import LocalDagRunner\n"
            f"create_pipeline(configs.PipelineConfig(home={str(tmp_path)!r}))\n"
            f"print(sorted(m for m in {unused!r} if m in sys.modules))\n"
            "from tfx.components import InfraValidator, Trainer\n"  # the deferred __init__ runs now
            "import tfx\n"
            "from tfx import v1\n"
            "print(InfraValidator.__module__, v1.components.Trainer is Trainer is tfx.components.Trainer,\n"
            "      'keras_tuner' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    loaded, after = done.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", done.stdout[-500:]
    assert after == "tfx.components.infra_validator.component True True", done.stdout[-500:]
