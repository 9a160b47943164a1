"""Command-line arguments every config-reading command shares, and the shipped configs' paths."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path


def packaged_config(name: str) -> Path:
    """Path of a YAML shipped in atlas/configs/ (works from a checkout and from a wheel)."""
    return Path(str(resources.files("atlas") / "configs" / name))


def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """--config and --set, the same on every command that reads a config."""
    p.add_argument(
        "--config",
        required=required,
        help="YAML config (only differences from the "
        "schema defaults; see README 'Configuration reference')",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key by dotted path, e.g. --set training.learning_rate=2e-4 "
        "(repeatable; the value is parsed as YAML)",
    )
