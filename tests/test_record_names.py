"""No name of a side file, a split or a split folder is spelt in more than one module of the project.

Components hand each other files by name (the Trainer's records, the checks' reports, TFX's split
folders, statistics and schema files); each name has one home (mostly `trainer_module/records.py`)
that the writer and every reader import. This test reads every module's string literals (docstrings
aside: they may name a file to explain it) and fails, naming the modules and lines, when one of the
names below is spelt in two modules. The last test plants such a literal in a copy of the code and
checks that it is caught.
"""
from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "components", "trainer_module", "serving", "kubeflow")

# Literals compared whole: what components write and read beside their artifacts, and the split names.
NAMES = (
    # the Trainer's records (trainer_module/records.py) and TF Lite export (trainer_module/tflite_export.py)
    "serving_graph.json", "history.json", "training.json", "training_statistics.pb", "multiworker_spec.json",
    "worker-{}.json", "metadata.json", "evaluation.json", "model_float.tflite", "model_dynamic_int8.tflite", "model_int8.tflite",
    # the checks' and the Evaluator's records
    "evaluated.json", "drift.json", "skew-latest.json",
    # files of TFX, TFMA and TF Serving the project reads or writes
    "FeatureStats.pb", "schema.pbtxt", "SchemaDiff.pb", "eval_config.json", "fingerprint.pb",
    "tf_serving_warmup_requests",
    # what the CLI keeps in a home
    ".run.lock", "taxi-pipeline.json", "taxi-pipeline-scoring.json",
    # the splits ExampleGen writes
    "train", "eval",
)
# Literals looked for inside any string: TFX's split folder prefix.
PARTS = ("Split-",)
# Names that are also settings (PipelineConfig.workers, the Trainer's `workers` key): not counted where a
# setting is spelt (a dict key, the key of a `.get`, an item of a tuple or list of names).
ALSO_SETTINGS = ("workers",)


def _modules(root: Path) -> List[Path]:
    found = []
    for package in PACKAGES:
        found += [p for p in sorted((root / package).rglob("*.py"))
                  if not p.name.endswith("_test.py") and "__pycache__" not in p.parts]
    return found


def _docstrings(tree: ast.AST) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _as_setting(node: ast.AST, parents: Dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    if isinstance(parent, ast.Dict):
        return any(key is node for key in parent.keys)
    if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute) and parent.func.attr == "get":
        return bool(parent.args) and parent.args[0] is node
    if isinstance(parent, ast.Call) and getattr(parent.func, "id", "") in ("getattr", "hasattr"):
        return len(parent.args) > 1 and parent.args[1] is node
    return isinstance(parent, (ast.Tuple, ast.List, ast.Set))


def spellings(root: Path) -> Dict[str, Dict[str, List[int]]]:
    """name -> module (path relative to root) -> lines where a string literal spells it."""
    found: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(list))
    for path in _modules(root):
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        module = str(path.relative_to(root))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
                continue
            text = node.value
            hits = [n for n in NAMES if text == n] + [p for p in PARTS if p in text]
            hits += [n for n in ALSO_SETTINGS if text == n and not _as_setting(node, parents)]
            for name in hits:
                found[name][module].append(node.lineno)
    return found


def repeated(root: Path) -> List[Tuple[str, Dict[str, List[int]]]]:
    return [(name, dict(modules)) for name, modules in sorted(spellings(root).items()) if len(modules) > 1]


def test_each_side_file_and_split_name_is_spelt_in_one_module():
    twice = repeated(REPO)
    assert not twice, "names spelt in more than one module (give each one home and import it):\n" + "\n".join(
        f"  {name!r}: " + "; ".join(f"{m}:{','.join(map(str, lines))}" for m, lines in sorted(modules.items()))
        for name, modules in twice)


def test_every_listed_name_has_its_home():
    """A name that is nowhere (renamed, or its home moved out of these packages) is dropped from the list,
    not silently checked against nothing."""
    found = spellings(REPO)
    missing = [n for n in NAMES + PARTS + ALSO_SETTINGS if n not in found]
    assert not missing, f"listed but spelt in no module: {missing}"


def test_a_name_spelt_in_a_second_module_is_caught(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert not repeated(tmp_path)
    planted = {
        "pipeline/status.py": 'HISTORY = "history.json"\n',
        "components/serving_validator.py": 'SPLIT = "eval"\n',
        "serving/client.py": 'def _dir(uri, split):\n    return f"{uri}/Split-{split}"\n',
        "kubeflow/storage.py": 'import os\nREPORTS = os.path.join("model_run", "workers")\n',
    }
    for module, line in planted.items():
        path = tmp_path / module
        path.write_text(path.read_text() + "\n\n" + line)
    caught = dict(repeated(tmp_path))
    assert set(caught) == {"history.json", "eval", "Split-", "workers"}, caught
    for (module, _), name in zip(planted.items(), ("history.json", "eval", "Split-", "workers")):
        assert module in caught[name], caught[name]
