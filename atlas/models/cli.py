"""`atlas model summary`: build the configured policy and report its parameters per module.

    atlas model summary --config atlas/configs/train_config.yaml --meta --json

--meta builds every module on the meta device: no memory, no weights, no checkpoint files needed
(VGGT from its preset; the language model from its folder's config.json, or from the Llama-2-7B
architecture when the folder is absent, which the output says).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def add_model_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add `summary` under the `atlas model` parser."""
    from atlas.config.arguments import add_config_args

    sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("summary", help="total and trainable parameters per module")
    add_config_args(p, required=True)
    p.add_argument(
        "--meta",
        action="store_true",
        help="build on the meta device: no memory or weights needed (full-size models)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run_summary)


def model_summary(cfg: Any, meta: bool) -> dict[str, Any]:
    """{"modules": {name: {"total", "trainable"}}, "total", "trainable", "notes": [...], ...}."""
    from atlas.models.config import policy_config
    from atlas.models.language import resolve_language_path
    from atlas.models.policy import build_policy

    notes = []
    lang_path = resolve_language_path(cfg.model.language_encoder.name_or_path)
    if meta and not (lang_path / "config.json").is_file():
        notes.append(f"{lang_path}/config.json not found: language encoder counted as Llama-2-7B")
    if not meta and cfg.model.vggt.checkpoint is None:
        notes.append("model.vggt.checkpoint not set: VGGT built with random weights")
    policy = build_policy(policy_config(cfg), meta=meta, load_weights=not meta)
    counts = policy.parameter_counts()
    return {
        "meta": meta,
        "vggt_preset": cfg.model.vggt.preset,
        "language_encoder": str(lang_path),
        "modules": counts,
        "total": sum(c["total"] for c in counts.values()),
        "trainable": sum(c["trainable"] for c in counts.values()),
        "notes": notes,
    }


def run_summary(args: argparse.Namespace) -> int:
    """Handler of `atlas model summary`; exit code 2 on a config or path error."""
    from atlas.config import ConfigError, load_config
    from atlas.models.parameters import format_parameter_counts

    try:
        cfg = load_config(args.config, args.overrides)
        summary = model_summary(cfg, meta=args.meta)
    except (ConfigError, FileNotFoundError, KeyError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return 0
    lines = [f"config {args.config} (meta device: {args.meta})"]
    lines.append(format_parameter_counts(summary["modules"]))
    lines += [f"note: {n}" for n in summary["notes"]]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
