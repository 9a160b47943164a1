"""`atlas model summary`: the full-size model counted on the meta device, and a tiny real build."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from atlas.models.cli import add_model_subcommands

CONFIGS = Path(__file__).resolve().parents[2] / "atlas" / "configs"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_model_subcommands(parser)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_full_model_summary_on_meta(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "train_config.yaml")
    assert _run(["summary", "--config", cfg, "--meta", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modules"]["vggt"] == {"total": 1_190_596_120, "trainable": 0}
    # The LLaMA folder is not here: counted as Llama-2-7B (LlamaModel, no LM head), and said so.
    if not Path("checkpoints/Llama-2-7b-hf/config.json").is_file():
        assert any("Llama-2-7B" in n for n in out["notes"])
    assert out["modules"]["language_encoder"] == {"total": 6_607_343_616, "trainable": 0}
    assert out["trainable"] == sum(out["modules"][m]["trainable"] for m in out["modules"])


def test_summary_table_and_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model:\n  vggt: {preset: tiny}\n  language_encoder: {name_or_path: minilm}\n"
        "data: {image_size: 56}\n"
    )
    assert _run(["summary", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out
    assert "language_encoder" in table and "22,713,216" in table  # MiniLM-L6 with its pooler
    cfg.write_text("model:\n  vggt: {preset: tiny}\n  language_encoder: {name_or_path: /nowhere}\n")
    assert _run(["summary", "--config", str(cfg)]) == 2
    assert "/nowhere" in capsys.readouterr().err
