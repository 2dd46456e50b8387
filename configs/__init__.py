"""The config layer: the YAML files in this folder, the schema assembled from the components'
sections, the loader (file → profile → overrides → seed) and train.py's command line."""

from configs.cli import DEFAULT_CONFIG, DEFAULT_OUTPUT_DIR, Arguments, parse_args, parse_seed
from configs.loading import PROFILE_DIR, config_to_yaml, load_config
from configs.schema import Config

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_OUTPUT_DIR",
    "PROFILE_DIR",
    "Arguments",
    "Config",
    "config_to_yaml",
    "load_config",
    "parse_args",
    "parse_seed",
]
