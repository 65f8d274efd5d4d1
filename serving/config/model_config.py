"""TF Serving's model configuration: the `--model_config_file` text proto and version policies.

The same `ModelServerConfig` (tensorflow_serving/config/model_server_config.proto) drives the
stand-in and real TF Serving, so one config file works with both.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Set

from tensorflow_serving.config import model_server_config_pb2

from serving.config.extra_protos import parse_text


class ConfigError(ValueError):
    """The model configuration is unusable; the message says what to fix."""


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """What `--model_name`/`--model_base_path` mean: one model, latest version policy."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = str(base_path)
    model.model_platform = "tensorflow"
    return config


def parse_config_text(text: str, source: str = "model config") -> model_server_config_pb2.ModelServerConfig:
    config = parse_text(text, model_server_config_pb2.ModelServerConfig(), source, ConfigError)
    validate(config, source)
    return config


def load_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"cannot read model config file {path}: {err.strerror}") from None
    config = parse_config_text(text, f"model config file {path}")
    # TF Serving resolves relative base paths against the config file's directory.
    for model in config.model_config_list.config:
        if not os.path.isabs(model.base_path) and "://" not in model.base_path:
            model.base_path = os.path.join(os.path.dirname(os.path.abspath(path)), model.base_path)
    return config


def validate(config: model_server_config_pb2.ModelServerConfig, source: str = "model config") -> None:
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: only model_config_list is supported (custom_model_config is not)")
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ConfigError(f"{source}: every model needs a name")
        if model.name in names:
            raise ConfigError(f"{source}: model name {model.name!r} appears twice")
        names.add(model.name)
        if not model.base_path:
            raise ConfigError(f"{source}: model {model.name!r} needs a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {model.name!r} has platform {model.model_platform!r}; "
                              "only 'tensorflow' is served")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ConfigError(f"{source}: model {model.name!r} asks for a negative number of latest versions")
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ConfigError(f"{source}: model {model.name!r} has a specific version policy with no versions")


def aspired_versions(model: model_server_config_pb2.ModelConfig, available: Iterable[int]) -> Set[int]:
    """The versions the policy wants loaded, out of those present on disk."""
    versions = sorted(set(available))
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(versions) & set(policy.specific.versions)
    n = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return set(versions[-n:])


def versions_on_disk(base_path: str) -> Dict[int, str]:
    """Numeric sub-directories of a model's base path -> their paths (TF Serving ignores the rest).

    Names such as `00000123` are version 123, as in TF Serving's own test models.
    """
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for name in names:
        path = os.path.join(base_path, name)
        if name.isdigit() and os.path.isdir(path):
            found.setdefault(int(name), path)
    return found
