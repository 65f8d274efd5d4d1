"""kubeflow/README.md's Steps and Multi-user Kubeflow commands name subcommands, flags, files, pods
and accounts that exist: every `taxi-pipeline` line parses, `kubeflow-manifests` lines are run for
real, and the kubectl lines use what they wrote."""
import re
import shlex
from pathlib import Path

import pytest

from kubeflow import storage, submit
from pipeline import kubeflow_manifests
from pipeline.cli import build_parser, main

README = Path(__file__).resolve().parents[2] / "kubeflow" / "README.md"
REPO = README.parents[1]
TRAINING_OPERATOR = "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.2"


def section_commands(heading):
    """Shell command lines of the ```sh blocks under `heading`, until the next heading (subsections excluded)."""
    inside, in_code, block = False, False, []
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code and re.match(r"#{1,6} ", line):
            inside = line == heading
            continue
        if inside and in_code:
            block.append(line)
    variables, lines = {}, []
    for line in block:
        line = line.split(" #", 1)[0].strip().rstrip("&").strip()
        if not line or line.startswith("#"):
            continue
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        if re.fullmatch(r"[A-Z_]+=\S+", line):
            name, value = line.split("=", 1)
            variables[name] = value
            continue
        lines.extend(part.strip() for part in line.split(" && "))
    assert lines, heading
    return lines


def check(lines, tmp_path):
    """Runs the section's checks; returns {output dir: (namespace, generated file names)}."""
    outputs, token_files = {}, set()
    for line in lines:
        redirect = None
        if " > " in line:
            line, redirect = (part.strip() for part in line.split(" > "))
        argv = shlex.split(line)
        if argv[0] == "taxi-pipeline":
            args = build_parser().parse_args(argv[1:])  # unknown flags or subcommands: SystemExit
            if argv[1] == "kubeflow-manifests":
                out = tmp_path / args.output.name
                assert main(argv[1:argv.index("--output")] + ["--output", str(out)]
                            + argv[argv.index("--output") + 2:]) == 0, line
                outputs[str(args.output)] = (args.namespace, {p.name for p in out.iterdir()})
            if argv[1] == "submit" and args.token_file is not None:
                assert str(args.token_file) in token_files, f"{line}: no command writes {args.token_file}"
            continue
        if argv[0] == "make":
            assert re.search(rf"^{argv[1]}:", (REPO / "Makefile").read_text(), re.M), line
            continue
        if argv[0] == "podman":
            continue
        assert argv[0] == "kubectl", line
        verb = argv[1]
        if verb in ("apply", "delete") and ("-k" in argv or "-f" in argv):
            target = argv[argv.index("-k" if "-k" in argv else "-f") + 1]
            if target.startswith("github.com/"):
                assert target == TRAINING_OPERATOR
                continue
            head, _, name = target.partition("/")
            if head in outputs:
                assert (name or "kustomization.yaml") in outputs[head][1], line
            else:
                assert (REPO / target).exists(), line
        elif verb == "wait":
            namespace = argv[argv.index("-n") + 1]
            assert argv[-1] == f"pod/{kubeflow_manifests.DATA_LOADER_POD}", line
            assert namespace in {ns for ns, _ in outputs.values()}, line
        elif verb == "cp":
            target = argv[-1]
            namespace, rest = target.split("/", 1)
            pod, path = rest.split(":", 1)
            assert pod == kubeflow_manifests.DATA_LOADER_POD and namespace in {ns for ns, _ in outputs.values()}, line
            assert Path(path).parent == Path(str(storage.DATA_DIR)), line
        elif verb == "create" and argv[2] == "token":
            namespace = argv[argv.index("-n") + 1]
            assert argv[3] == kubeflow_manifests.RUNNER_SERVICE_ACCOUNTS["multi-user"], line
            assert f"--audience={submit.TOKEN_AUDIENCE}" in argv, line
            assert namespace in {ns for ns, _ in outputs.values()}, line
            assert redirect, line
            token_files.add(redirect)
        elif verb == "port-forward":
            assert argv[argv.index("-n") + 1] == "kubeflow" and argv[-2] in ("svc/ml-pipeline-ui", "svc/ml-pipeline")
        else:
            pytest.fail(f"unchecked README command: {line}")
    return outputs


def test_standalone_steps(tmp_path):
    outputs = check(section_commands("## Steps"), tmp_path)
    assert [ns for ns, _ in outputs.values()] == ["kubeflow"]


def test_multi_user_steps(tmp_path):
    lines = section_commands("### Multi-user Kubeflow")
    outputs = check(lines, tmp_path)
    (namespace, files), = outputs.values()
    assert namespace == "kubeflow-user-example-com"
    assert kubeflow_manifests.LAUNCHER_FILE in files
    submits = [line for line in lines if line.startswith("taxi-pipeline submit")]
    assert submits and all(f"--namespace {namespace}" in line and "--token-file" in line for line in submits)
