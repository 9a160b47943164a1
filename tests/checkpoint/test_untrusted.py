"""Crafted checkpoint folders never run code: every entry point refuses them (exit 2, the file).

A payload is a pickle whose reduction would create a marker file when unpickled. It is put into
real checkpoints of the trainer (optimizer.pt, rng.pt, FSDP2's dcp/.metadata, DeepSpeed's model
states) with COMPLETE.json recomputed, as whoever crafts a folder would, and then given to
`--resume PATH`, `resume: auto`, `load_from`, `atlas eval`, `atlas rollout`, `atlas ckpt inspect`
and `model.vggt.checkpoint`. Everything runs in this process (the payload would run here too).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _tiny_run import tiny_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from atlas.checkpoint import layout
from atlas.cli import main

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates `marker`: the proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real runs of two optimizer steps: ddp (model.safetensors + *.pt) and fsdp2 (dcp/)."""
    root = tmp_path_factory.mktemp("untrusted")
    for strategy in ("ddp", "fsdp2"):
        assert train(root, strategy) == 0
    return root


def train(root: Path, strategy: str, *args: str) -> int:
    cfg = tiny_config(root / strategy, root / "data")
    return main(["train", "--config", str(cfg), "--set", f"training.strategy={strategy}", *args])


def craft(base: Path, tmp: Path, kind: str) -> tuple[Path, Path, Path]:
    """(run dir, its checkpoint with a payload in `kind`, the marker the payload would create)."""
    marker = tmp / "PAYLOAD_RAN"
    source = "fsdp2" if kind == "dcp/.metadata" else "ddp"
    run = tmp / "run"
    shutil.copytree(base / source, run, ignore=shutil.ignore_patterns("run.lock"))
    ckpt = run / "iter_00000002"
    if kind == "dcp/.metadata":
        (ckpt / kind).write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "mp_rank_00_model_states.pt":  # as a DeepSpeed run would have written it
        torch.save({"module": {}, "extra": Payload(marker)}, ckpt / kind)
        meta = json.loads((ckpt / layout.META).read_text())
        meta["model"] = {**meta["model"], "owner": "deepspeed"}
        (ckpt / layout.META).write_text(json.dumps(meta))
        (ckpt / layout.MODEL).unlink()
    else:
        torch.save({"state": Payload(marker)}, ckpt / kind)
    layout.write_marker(ckpt, extra={"step": 2})  # checksums recomputed: they prove nothing
    layout.verify(ckpt)
    return run, ckpt, marker


KINDS = ["optimizer.pt", "rng.pt", "dcp/.metadata", "mp_rank_00_model_states.pt"]
# Resuming with DeepSpeed builds its engine in a fresh interpreter, twice: minutes on 2 cores.
RESUME_KINDS = [*KINDS[:3], pytest.param(KINDS[3], marks=pytest.mark.slow)]


@pytest.fixture()
def output(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Callable[[], str]:
    """Everything printed or logged since the last call (the CLI reports through both)."""

    def read() -> str:
        out = capsys.readouterr()
        text = out.err + out.out + caplog.text
        caplog.clear()
        return text

    return read


def cli(args: list[str], output: Callable[[], str], separate: bool = False) -> tuple[int, str]:
    """`atlas ARGS` here, or in a fresh interpreter (`separate`: DeepSpeed keeps global state
    between engines that a second in-process run trips over)."""
    if not separate:
        code = main(args)
        return code, output()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    entry = "import sys; from atlas.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", entry, *args], env=env, capture_output=True)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def refused(result: tuple[int, str], kind: str, marker: Path) -> None:
    code, text = result
    assert not marker.exists(), "the payload ran"
    assert code == 2, text[-2000:]
    assert Path(kind).name in text and "refused" in text
    assert re.search(r"GLOBAL (io|builtins)\.open|global (io|builtins)\.open", text), text[-2000:]
    assert "Traceback" not in text


@pytest.mark.parametrize("kind", RESUME_KINDS)
def test_resume_path_and_auto(
    base: Path, tmp_path: Path, kind: str, output: Callable[[], str]
) -> None:
    run, ckpt, marker = craft(base, tmp_path, kind)
    strategy = {"dcp/.metadata": "fsdp2", "mp_rank_00_model_states.pt": "deepspeed"}.get(kind)
    if strategy == "deepspeed":
        pytest.importorskip("deepspeed")
    cfg = tiny_config(tmp_path / "new", base / "data")
    args = ["train", "--config", str(cfg), "--set", f"training.strategy={strategy or 'ddp'}"]
    separate = strategy == "deepspeed"
    refused(cli([*args, "--resume", str(ckpt)], output, separate), kind, marker)
    auto = ["--set", f"checkpoint.save_dir={run}", "--resume", "auto"]
    refused(cli([*args, *auto], output, separate), kind, marker)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("iter_")) == [ckpt.name]


@pytest.mark.parametrize("kind", KINDS)
def test_load_from_eval_and_inspect(
    base: Path, tmp_path: Path, kind: str, output: Callable[[], str]
) -> None:
    run, ckpt, marker = craft(base, tmp_path, kind)
    cfg = tiny_config(tmp_path / "new", base / "data")
    load_from = ["--set", f"checkpoint.load_from={ckpt}"]
    refused(cli(["train", "--config", str(cfg), *load_from], output), kind, marker)
    refused(cli(["eval", "--checkpoint", str(ckpt)], output), kind, marker)
    refused(cli(["ckpt", "inspect", str(ckpt)], output), kind, marker)
    refused(cli(["ckpt", "inspect", str(run)], output), kind, marker)


def test_vggt_checkpoint_file(base: Path, tmp_path: Path, output: Callable[[], str]) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    weights = tmp_path / "vggt.pt"
    torch.save({"aggregator.camera_token": Payload(marker)}, weights)
    cfg = tiny_config(tmp_path / "new", base / "data")
    vggt = ["--set", f"model.vggt.checkpoint={weights}"]
    refused(cli(["train", "--config", str(cfg), *vggt], output), "vggt.pt", marker)


def test_rollout_and_eval_of_an_export(
    base: Path, tmp_path: Path, output: Callable[[], str]
) -> None:
    """An export holds no pickle, but its config names `model.vggt.checkpoint`: a crafted one."""
    marker = tmp_path / "PAYLOAD_RAN"
    weights = tmp_path / "vggt.pt"
    torch.save({"aggregator.camera_token": Payload(marker)}, weights)
    export = tmp_path / "export"
    shutil.copytree(base / "ddp" / "final", export)
    file = export / layout.MODEL
    with safe_open(str(file), framework="pt") as f:
        metadata = dict(f.metadata())
    state = {k: v for k, v in load_file(file).items() if not k.startswith("vggt.")}
    excluded = ["vggt.", *json.loads(metadata["excluded_prefixes"])]
    save_file(state, file, metadata={**metadata, "excluded_prefixes": json.dumps(excluded)})
    config = json.loads((export / "config.json").read_text())
    config["vggt"]["checkpoint"] = str(weights)  # config.json is the PolicyConfig
    (export / "config.json").write_text(json.dumps(config))
    rollout = ["rollout", "--suite", "synthetic", "--tasks", "0", "--trials", "1", "--videos", "0"]
    out = ["--out", str(tmp_path / "rollouts")]
    refused(cli([*rollout, *out, "--checkpoint", str(export)], output), "vggt.pt", marker)
    refused(cli(["eval", "--checkpoint", str(export)], output), "vggt.pt", marker)
    # A crafted checkpoint folder is no export: refused before any file of it is read.
    (tmp_path / "crafted").mkdir()
    _, ckpt, marker = craft(base, tmp_path / "crafted", "optimizer.pt")
    code, text = cli([*rollout, *out, "--checkpoint", str(ckpt)], output)
    assert code == 2 and "config.json" in text and not marker.exists()


@pytest.mark.parametrize(
    ("setting", "what"),
    [
        ("checkpoint.resume", "garbage"),
        ("checkpoint.load_from", "garbage"),
        ("checkpoint.load_from", "empty_dir"),
        ("model.vggt.checkpoint", "garbage"),
        ("model.vggt.checkpoint", "empty_dir"),
    ],
)
def test_bad_files_are_one_line_refusals(
    base: Path, tmp_path: Path, setting: str, what: str, output: Callable[[], str]
) -> None:
    target = tmp_path / ("weights.safetensors" if what == "garbage" else "folder")
    if what == "garbage":
        target.write_bytes(bytes(range(256)) * 4)
    else:
        target.mkdir()
    cfg = tiny_config(tmp_path / "new", base / "data")
    code, text = cli(["train", "--config", str(cfg), "--set", f"{setting}={target}"], output)
    assert code == 2, text[-2000:]
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors and str(target) in errors[-1] and "Traceback" not in text
    assert not (tmp_path / "new" / "iter_00000002").exists()
