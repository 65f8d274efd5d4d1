"""The pipeline image's Dockerfile, checked statically (the real build: test_kubeflow_image_build.py)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "kubeflow" / "Dockerfile"


def instructions(stage=None):
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = [tuple(line.strip().split(None, 1)) for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    stages, current = [], None
    for op, arg in pairs:
        if current is None and op.upper() != "FROM":  # global ARGs before the first FROM
            continue
        if op.upper() == "FROM":
            current = []
            stages.append((arg, current))
        current.append((op.upper(), arg))
    return stages


def base_default():
    """The default of the BASE_IMAGE build argument."""
    return re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)


def test_two_stages_on_the_base_argument_python_310_slim_by_default():
    stages = instructions()
    assert [base.split()[0] for base, _ in stages] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert base_default() == "python:3.10-slim"


def test_installs_the_project_with_the_pinned_constraints():
    build = instructions()[0][1]
    runs = " ".join(arg for op, arg in build if op == "RUN")
    assert re.search(r"pip install -c constraints\.txt \.(\s|$)", runs)  # the dependencies, pinned
    final = " ".join(arg for op, arg in instructions()[-1][1] if op == "RUN")
    assert re.search(r"pip install .*--no-deps .*/src", final)  # then the project itself, nothing else
    assert "pip check" in final


def test_copies_every_package_setup_py_installs():
    setup = (REPO / "setup.py").read_text()
    packages = set(re.findall(r'"([a-z_]+)"', setup.split("find_packages(", 1)[1].split(")", 1)[0]))
    copies = [arg for _, stage in instructions() for op, arg in stage if op == "COPY" and "--from" not in arg]
    copied = {arg.split()[0].rstrip("/") for arg in copies}
    assert packages and packages <= copied
    assert {"setup.py", "constraints.txt"} <= set(" ".join(copies).split())
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for name in packages | {"setup.py", "constraints.txt"}:
        assert any(line.strip() in (f"!{name}", f"!{name}/") for line in ignore), f"{name} excluded from context"


def test_runtime_env_user_and_entrypoint():
    runtime = instructions()[-1][1]
    env = " ".join(arg for op, arg in runtime if op == "ENV")
    assert "TF_USE_LEGACY_KERAS=1" in env
    assert "PATH=/opt/venv/bin:" in env  # `python -m tfx...` (the step command) finds TFX
    user = [arg for op, arg in runtime if op == "USER"]
    assert user and not user[-1].startswith(("root", "0"))
    # KubeflowV2DagRunner sets the container command itself; an ENTRYPOINT would be ignored at
    # best and, if a step ever relied on it, would wrap the TFX entry point.
    assert not any(op == "ENTRYPOINT" for op, _ in runtime)


def test_the_schema_path_compiled_specs_name_is_where_the_image_installs_it():
    from kubeflow import storage
    from pipeline import configs

    assert "schema/*.pbtxt" in (REPO / "setup.py").read_text()  # shipped as package data
    assert configs.SCHEMA_PATH.is_file()
    venv_python = re.search(r"/opt/venv/lib/(python3\.\d+)/", str(storage.IMAGE_SCHEMA_PATH)).group(1)
    assert venv_python == "python" + base_default().split(":")[1].split("-")[0]
    assert str(storage.IMAGE_SCHEMA_PATH).endswith("/site-packages/trainer_module/schema/" + configs.SCHEMA_PATH.name)
    assert "storage.IMAGE_SCHEMA_PATH" in DOCKERFILE.read_text()  # and the build checks it
