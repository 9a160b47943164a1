"""The typed configuration tree (`schema`) and its YAML loader (`loader`)."""

from atlas.config.loader import (
    ConfigError,
    config_from_resolved,
    dump_yaml,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from atlas.config.schema import POLICY_MODULES, AtlasConfig

__all__ = [
    "POLICY_MODULES",
    "AtlasConfig",
    "ConfigError",
    "config_from_resolved",
    "dump_yaml",
    "from_dict",
    "load_config",
    "save_config",
    "to_dict",
]
