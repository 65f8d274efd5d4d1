"""`taxi-pipeline serve`: the model server (serving/) with the pipeline's pushed model as its default.

Every flag is `tensorflow_model_server`'s (see `serving.model_servers.main`); this command adds only
`--home`: with no model flags it serves `<home>/serving/taxi` as model `taxi`, and with
`--model_name NAME` alone it serves `<home>/serving/NAME`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import configs
from serving.model_servers import main as server_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"pipeline home; the default model is <home>/serving/{configs.MODEL_NAME} "
                             f"(default ./outputs or ${configs.HOME_ENV})")
    server_main.add_arguments(parser)


def default_model(home: Path):
    """What `serve` serves when no --model_base_path/--model_config_file is given."""
    serving_base = configs.PipelineConfig(home=(home or configs.default_home()).resolve()).serving_base

    def resolve(model_name):
        name = model_name or configs.MODEL_NAME
        hint = ("run `taxi-pipeline run` first" if name == configs.MODEL_NAME
                else f"the pipeline pushes to {serving_base}/{configs.MODEL_NAME}")
        return name, str(serving_base / name), hint

    return resolve


def main(args) -> int:
    return server_main.main(args, default_model=default_model(args.home))
