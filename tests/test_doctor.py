"""`atlas doctor`: environment table, config checks and exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from atlas.doctor import run_doctor

ROOT = Path(__file__).resolve().parents[1]


def _args(config: str | None, overrides: list[str] | None = None) -> argparse.Namespace:
    return argparse.Namespace(config=config, overrides=overrides or [])


def test_doctor_environment_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_doctor(_args(None)) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "python" in out and "doctor: all" in out


def test_doctor_reports_missing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ROOT / "atlas/configs/train_config.yaml"
    code = run_doctor(_args(str(cfg), [f"checkpoint.save_dir={tmp_path}"]))
    out = capsys.readouterr().out
    assert code == 1
    assert "model.vggt.checkpoint" in out and "missing" in out
    assert f"{tmp_path} writable" in out


def test_doctor_debug_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ROOT / "atlas/configs/debug.yaml"
    code = run_doctor(_args(str(cfg), [f"checkpoint.save_dir={tmp_path}/run"]))
    assert code == 0, capsys.readouterr().out


def test_doctor_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainig: {}\n")
    assert run_doctor(_args(str(bad))) == 1
    assert "did you mean 'training'" in capsys.readouterr().out
