"""A Pusher executor whose new model version appears in the serving directory all at once.

TFX's Pusher copies the model file by file straight into `<base>/<version>/` (saved_model.pb last).
A model server polling the base path can see that directory half-written. This executor lets the
stock Pusher write into a hidden staging directory beside the versions (TF Serving and our server
only consider numeric names), then renames the finished version into place: on a local or POSIX
filesystem the rename is atomic, so the serving directory only ever holds complete versions.

What it pushes is the stock Pusher's `GetModelPath`: in this pipeline the ServingValidator's
infra blessing (its `stamped_model/`, the Trainer's model plus warmup requests), as with TFX's
InfraValidator `make_warmup`. The same-model check compares `fingerprint.pb`, which covers the
graph and variables but not `assets.extra/`, so the same model with other warmup records is not
pushed again.
"""
import os
import shutil
import uuid

from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from kubeflow import tfx_internals


class AtomicPusherExecutor(pusher_executor.Executor):
    """Stock Pusher semantics (push only when blessed), staged then renamed into place."""

    def Do(self, input_dict, output_dict, exec_properties):
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        base = destination.filesystem.base_directory
        if destination.WhichOneof("destination") != "filesystem" or "://" in base:
            # Object stores have no atomic rename: keep the stock order (saved_model.pb written last).
            return super().Do(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        current = _serving_version_of(self.GetModelPath(input_dict), base)
        if current is not None and self.CheckBlessing(input_dict):
            # The same model is already the newest version (e.g. a re-run on unchanged data): pushing
            # it again would only make the server reload identical weights under a new number.
            tfx_internals.mark_pushed(self, pushed, tfx_internals.pushed_folder(base, current), current)
            return None

        staging = os.path.join(base, f".staging-{uuid.uuid4().hex}")
        destination.filesystem.base_directory = staging
        staged_properties = dict(exec_properties)
        staged_properties[standard_component_specs.PUSH_DESTINATION_KEY] = proto_utils.proto_to_json(destination)
        os.makedirs(base, exist_ok=True)
        try:
            super().Do(input_dict, output_dict, staged_properties)
            staged = tfx_internals.pushed_version(pushed)
            if staged is None:
                return
            version = int(staged)
            while os.path.exists(tfx_internals.pushed_folder(base, str(version))):  # two pushes within one second
                version += 1
            final = tfx_internals.pushed_folder(base, str(version))
            os.rename(tfx_internals.pushed_folder(staging, staged), final)
            tfx_internals.mark_pushed(self, pushed, final, str(version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _serving_version_of(model_path: str, base: str):
    """The newest version under `base` if it holds this very SavedModel (same fingerprint), else None."""
    from serving.config.model_config import versions_on_disk  # the versions a model server sees

    fingerprint = os.path.join(model_path, "fingerprint.pb")
    versions = versions_on_disk(base)
    if not versions or not os.path.exists(fingerprint):
        return None
    newest = max(versions)
    newest_fingerprint = os.path.join(versions[newest], "fingerprint.pb")
    if os.path.exists(newest_fingerprint) and _read(newest_fingerprint) == _read(fingerprint):
        return os.path.basename(versions[newest])
    return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
