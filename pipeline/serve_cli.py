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


def default_model(home: Path) -> server_main.DefaultModel:
    """What `serve` serves when no --model_base_path/--model_config_file is given: the model the
    pipeline at `home` pushes (PipelineConfig says where), or another by --model_name beside it."""
    config = configs.PipelineConfig(home=(home or configs.default_home()).resolve())
    return server_main.DefaultModel(serving_base=config.serving_base, name=config.model_name,
                                    missing_hint="run `taxi-pipeline run` first")


def main(args) -> int:
    return server_main.main(args, default_model=default_model(args.home))
