"""`atlas eval --checkpoint DIR`: offline metrics of a saved policy, printed as a table or JSON.

The checkpoint's validation split is rebuilt from its config and seed (or `--data` names other
episodes), normalized with the policy's own statistics, and scored by
`atlas.eval.offline.evaluate_policy`: the same function the trainer validates with, so the
numbers equal the run's last validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atlas.checkpoint.resume import load_weights
from atlas.config.loader import ConfigError, config_from_resolved, load_config
from atlas.config.schema import AtlasConfig
from atlas.data import LiberoDataset, Normalizer, build_dataloader, build_datasets
from atlas.data.errors import DataError
from atlas.eval.metrics import format_metrics_table
from atlas.eval.offline import evaluate_policy
from atlas.models.config import RUN_SECTIONS, policy_config, read_policy_config
from atlas.models.policy import AtlasVLAPolicy, build_policy
from atlas.runtime import resolve_device, resolve_precision, seed_everything


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Options of `atlas eval`."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="an exported policy (best/, final/: config.json + model.safetensors) or an "
        "iter_N checkpoint directory",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="evaluate on every episode of these suites/files instead of the checkpoint's "
        "validation split (rebuilt from its config and seed)",
    )
    parser.add_argument("--batch-size", type=int, help="default: the checkpoint's data.batch_size")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def run_eval_command(args: argparse.Namespace) -> int:
    """`atlas eval`: rebuild the held-out data, run `evaluate_policy`, print a table or JSON.

    Exit codes: 0 done, 2 bad input (no such checkpoint, no held-out episodes, bad data).
    """
    try:
        result = evaluate_checkpoint(Path(args.checkpoint), args.data, args.batch_size, args.device)
    except (FileNotFoundError, DataError, ConfigError, ValueError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(format_metrics_table(result) + "\n")
    return 0


def evaluate_checkpoint(
    path: Path,
    data: list[str] | None = None,
    batch_size: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Offline metrics of the policy in `path` on its validation split (or on `data`)."""
    dev = resolve_device(device)
    policy, cfg = load_policy_for_eval(path, data)
    if batch_size:
        cfg.data.batch_size = batch_size
    dataset = build_eval_dataset(cfg, data, policy.normalizer)
    if dataset is None or len(dataset) == 0:
        raise ValueError(
            f"{path}: its config holds out no validation episodes (data.val_split is 0); "
            "pass --data PATH to evaluate on other episodes"
        )
    loader = build_dataloader(dataset, cfg, list(range(len(dataset))), train=False)
    precision = resolve_precision(cfg.training.mixed_precision, dev)
    policy.to(dev)
    policy.cache_instructions(dataset.tasks)
    result = evaluate_policy(policy, loader, policy.normalizer, dev, precision, per_task_loss=True)
    result["checkpoint"] = str(path)
    result["data"] = data or "validation split"
    return result


def load_policy_for_eval(
    path: Path, data: list[str] | None = None
) -> tuple[AtlasVLAPolicy, AtlasConfig]:
    """The policy of an export (config.json) or of an iter_N checkpoint (config.yaml), and the
    run config its validation split is rebuilt from (see `run_config_of`)."""
    if (path / "config.json").is_file():
        return AtlasVLAPolicy.from_pretrained(path), run_config_of(path, data)
    if (path / "config.yaml").is_file():
        cfg = load_config(path / "config.yaml")
        _, _, normalizer = build_datasets(cfg)  # the run's statistics, as the trainer built them
        # Seeded as the trainer seeds before building: iter_N checkpoints leave frozen weights
        # out, and a randomly initialised frozen backbone (the debug VGGT) is rebuilt this way.
        seed_everything(cfg.training.seed)
        policy = build_policy(policy_config(cfg), normalizer)
        load_weights(path, policy)
        return policy, cfg
    raise FileNotFoundError(
        f"{path}: neither an exported policy (config.json) nor a checkpoint (config.yaml)"
    )


def run_config_of(export: Path, data: list[str] | None) -> AtlasConfig:
    """The config of the run that wrote `export`: the run directory's config.yaml next to
    best/ and final/, or (earlier exports) the whole run config in config.json. With `--data`
    and no run config, the schema defaults with the policy's own data facts will do."""
    saved = json.loads((export / "config.json").read_text())
    if RUN_SECTIONS & set(saved):
        return config_from_resolved(saved, str(export / "config.json"))
    if (export.parent / "config.yaml").is_file():
        return load_config(export.parent / "config.yaml")
    if not data:
        raise FileNotFoundError(
            f"{export}: no run config (config.yaml) beside this export to rebuild its validation "
            "split from; pass --data PATH to evaluate on other episodes"
        )
    policy = read_policy_config(saved, str(export / "config.json"))
    cfg = AtlasConfig()
    cfg.data.cameras, cfg.data.history = list(policy.cameras), policy.history
    cfg.data.image_size, cfg.data.orientation = policy.image_size, policy.orientation
    return cfg


def build_eval_dataset(
    cfg: AtlasConfig, data: list[str] | None, normalizer: Normalizer | None
) -> LiberoDataset | None:
    """The checkpoint's validation split, or every episode of `data`; no augmentation.

    Samples are normalized with the policy's own statistics, never recomputed ones.
    """
    cfg.data.augmentation.enabled = False
    if data:
        cfg.data.paths, cfg.data.val_split, cfg.data.synthetic = list(data), 0.0, None
        dataset, _, _ = build_datasets(cfg)
    else:
        _, dataset, _ = build_datasets(cfg)
    if dataset is not None and normalizer is not None:
        dataset.normalizer = normalizer
    return dataset
