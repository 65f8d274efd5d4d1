"""`taxi-pipeline rollback [--to VERSION]`: serve the previous (or the named) pushed version again.

A model server polling `<home>/serving/taxi` serves its newest version, so rolling back is moving every
newer version out of that folder: each into `<home>/serving_retired/taxi/<version>/` (kept, not
deleted) with one `os.rename` on the same filesystem, the served one last, so the server sees the
newest version go straight from the served one to the target. The server then loads the target and
unloads the newer version only once the target is AVAILABLE, so no request fails while it switches:
TF Serving's AvailabilityPreservingPolicy unloads a version that is no longer aspired only when no
version is aspired, an aspired one is ready, or more than one un-aspired one is ready
(tensorflow_serving/core/availability_preserving_policy.cc:65-75 at 9d981c5), and serving/core/manager.py
does the same; tests/test_rollback.py checks it under load.

ML Metadata records it (pipeline/rollback_record.py): the rolled-back models' blessings are withdrawn,
so the next `run`'s baseline (TFX's LatestBlessedModelStrategy) is the model serving now, and a
`Rollback` execution says what went back to what, when and why; `status` shows it. On Kubeflow the
baseline is the serving folder's newest version (components/serving_baseline.py), which follows the
folder by itself. The home lock (pipeline/home_lock.py) is held throughout, so a rollback never
races a run's Pusher.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pipeline import configs, home_lock, report_store, rollback_record
from pipeline.errors import UserError

RETIRED_FOLDER = "serving_retired"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"the pipeline's home (default ./outputs or ${configs.HOME_ENV})")
    parser.add_argument("--to", type=int, default=None, metavar="VERSION",
                        help="the version to serve (default: the one before the version served now)")
    parser.add_argument("--reason", default="", help="why, recorded in ML Metadata and shown by `status`")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when a run holds the home, wait up to this long for it (default 0: exit 2 at once)")


def main(args) -> int:
    config = configs.PipelineConfig(home=(args.home or configs.default_home()).resolve())
    _check_folder(config.serving_model_dir)  # before the lock, which would create a missing home
    with home_lock.hold(config.home, wait_s=args.wait):
        for line in rollback(config, args.to, args.reason):
            print(line)
    return 0


def rollback(config: configs.PipelineConfig, to: Optional[int] = None, reason: str = "") -> List[str]:
    """Roll back `config.home`'s served model (the caller holds the home lock); returns what to print."""
    from serving.config.model_config import versions_on_disk  # what a model server sees

    model_dir = config.serving_model_dir
    _check_folder(model_dir)
    served, target, retired = plan(sorted(versions_on_disk(str(model_dir))), to, model_dir)
    retired_dir = Path(config.home) / RETIRED_FOLDER / config.model_name
    store = _store(config)  # a corrupt store fails here, before anything moves
    moved = retire(model_dir, retired_dir, retired)
    try:
        recorded = None if store is None else rollback_record.record(store, served, target, retired, reason)
    except BaseException:
        restore(model_dir, moved)  # nothing recorded: serve what was served before
        raise
    lines = [f"rolled back {config.model_name}: version {target} is served again (was {served}); "
             + "; ".join(f"{version} moved to {path}" for version, path in moved)]
    return lines + _record_lines(config, recorded, target)


def plan(versions: Sequence[int], to: Optional[int], model_dir: Path) -> Tuple[int, int, List[int]]:
    """(served version, version to serve, versions to retire: every one newer than it, oldest first)."""
    if not versions:
        raise UserError(f"nothing is pushed under {model_dir}: there is no version to roll back from")
    served = versions[-1]
    if len(versions) == 1:
        raise UserError(f"only version {served} is under {model_dir}: there is no older version to roll back to")
    if to is None:
        to = versions[-2]
    elif to > served:
        raise UserError(f"version {to} is newer than the served version {served}: rollback only goes back "
                        "(a retired version serves again once moved back into the serving folder)")
    elif to == served:
        raise UserError(f"version {to} is the one served now: name an older one, or leave out --to for the previous one")
    elif to not in versions:
        raise UserError(f"version {to} is not under {model_dir}; the versions there are "
                        f"{', '.join(str(v) for v in reversed(versions))} (newest first)")
    return served, to, [v for v in versions if v > to]


def retire(model_dir: Path, retired_dir: Path, versions: Sequence[int]) -> List[Tuple[int, Path]]:
    """Rename each version folder into `retired_dir`, in the order given; (version, new path) of each.

    Oldest first, so the newest (served) version leaves last and a server polling meanwhile never
    sees an intermediate version as the newest. A failed rename puts back what was moved and raises.
    """
    retired_dir.mkdir(parents=True, exist_ok=True)
    if os.stat(retired_dir).st_dev != os.stat(model_dir).st_dev:
        raise UserError(f"{retired_dir} is on another filesystem than {model_dir}: a version could not "
                        "move out atomically")
    moved: List[Tuple[int, Path]] = []
    try:
        for version in versions:
            destination = retired_dir / str(version)
            suffix = 1
            while destination.exists():  # retired before under the same number: keep both
                destination, suffix = retired_dir / f"{version}.{suffix}", suffix + 1
            os.rename(model_dir / str(version), destination)
            moved.append((version, destination))
    except OSError as err:
        restore(model_dir, moved)
        raise UserError(f"could not move version {version} out of {model_dir}: {err.strerror}; nothing was "
                        "changed") from None
    return moved


def restore(model_dir: Path, moved: Sequence[Tuple[int, Path]]) -> None:
    """Put moved versions back, newest first (undoes `retire`)."""
    for version, path in reversed(moved):
        os.rename(path, model_dir / str(version))


def _store(config: configs.PipelineConfig):
    """The home's ML Metadata store, read-write; None when it has none (a serving folder alone, as on Kubeflow)."""
    if report_store.metadata_store(config.home) is None:  # a corrupt or locked store is a UserError here
        return None
    return rollback_record.connect(config.metadata_path)


def _record_lines(config: configs.PipelineConfig, recorded, target: int) -> List[str]:
    if recorded is None:
        return [f"no ML Metadata store in {config.home}: nothing recorded (a baseline read from the serving "
                "folder, as on Kubeflow, follows by itself)"]
    changes = []
    if recorded.withdrawn:
        changes.append("withdrew the blessing of model " + ", ".join(str(m) for m in recorded.withdrawn))
    if recorded.restored:
        changes.append("restored the blessing of model " + ", ".join(str(m) for m in recorded.restored))
    head = f"ML Metadata: recorded a Rollback execution{'; ' if changes else ''}{'; '.join(changes)}"
    if recorded.served_models and recorded.baseline in recorded.served_models:
        return [f"{head}; the next run's baseline is model {recorded.baseline} (version {target})"]
    baseline = "no model" if recorded.baseline is None else f"model {recorded.baseline}"
    return [head, f"warning: ML Metadata holds no push of version {target}, so the next run's baseline is "
                  f"{baseline}, not the model served now"]


def _check_folder(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise UserError(f"no serving folder {model_dir}: nothing was pushed there (run `taxi-pipeline run`, "
                        "or pass the --home a run pushed to)")
