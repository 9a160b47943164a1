"""Each bad config or missing input: exit 2, one line naming the key, no traceback, no files.

One table, run through the real command (`atlas train`, in-process). The filesystem cases are found
by the preflight (`atlas.training.preflight`) before the run directory exists; `atlas doctor` lists
the same problems.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from atlas.cli import main
from atlas.data.synthetic import generate_synthetic

pytestmark = pytest.mark.usefixtures("restore_logging")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
DEBUG_YAML = ROOT / "atlas" / "configs" / "debug.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) LIBERO-layout suite: 1 task, 2 demos of 6 steps, 16 px, both cameras."""
    out = tmp_path_factory.mktemp("data") / "suite"
    return generate_synthetic(out, tasks=1, demos=2, steps=6, image_size=16, seed=0)


def _damaged(tmp: Path, dataset: Path) -> str:
    """A copy of the suite whose one file is cut in half (a partial download)."""
    src = next(dataset.glob("*.hdf5"))
    (tmp / "cut").mkdir()
    dst = tmp / "cut" / src.name
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return str(dst)


def _bad_demo(tmp: Path, dataset: Path) -> str:
    """A copy of the suite whose demo_1 has float32 images (training reads uint8)."""
    src = next(dataset.glob("*.hdf5"))
    (tmp / "bad").mkdir()
    dst = tmp / "bad" / src.name
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        demo = f["data"][sorted(f["data"])[1]]
        shape = demo["obs/agentview_rgb"].shape
        del demo["obs/agentview_rgb"]
        demo.create_dataset("obs/agentview_rgb", data=np.zeros(shape, np.float32))
    return str(dst.parent)


# (case, YAML text of the config file or None for debug.yaml, --set overrides, words in the error)
# `{tmp}` is the test's temporary folder, `{data}` the real dataset.
CASES = [
    ("betas", None, ["training.betas=[1.5,0.9]"], ["training.betas", "[0, 1)"]),
    ("dropout", None, ["model.fusion.dropout=1.5"], ["model.fusion.dropout", "[0, 1)"]),
    ("lr nan", None, ["training.learning_rate=.nan"], ["training.learning_rate", "finite"]),
    ("lr inf", None, ["training.learning_rate=.inf"], ["training.learning_rate", "finite"]),
    ("lr zero", None, ["training.learning_rate=0"], ["training.learning_rate", "> 0"]),
    ("module lr", None, ["training.module_lr.fusion=-1"], ["training.module_lr.fusion"]),
    ("weight decay", None, ["training.weight_decay=-0.1"], ["training.weight_decay", ">= 0"]),
    ("grad norm", None, ["training.max_grad_norm=0"], ["training.max_grad_norm"]),
    ("layers", None, ["model.vggt.layers=[99]"], ["model.vggt.layers", "4 aggregator layers"]),
    ("no layers", None, ["model.vggt.layers=[]"], ["model.vggt.layers"]),
    ("preset", None, ["model.vggt.preset=tiniy"], ["model.vggt.preset", "did you mean 'tiny'"]),
    ("no paths", None, ["data.paths=[]"], ["data.paths", "at least one"]),
    ("bad --set", None, ["data.cameras=[agentview_rgb"], ["--set data.cameras", "not valid YAML"]),
    ("empty file", "", [], ["cfg.yaml", "empty"]),
    ("comments only", "# nothing\n", [], ["cfg.yaml", "empty"]),
    ("list file", "- training\n", [], ["cfg.yaml", "mapping", "list"]),
    (
        "duplicate section",
        "training:\n  learning_rate: 2e-3\nmodel: {}\ntraining:\n  warmup_steps: 20\n",
        [],
        ["cfg.yaml", "'training' appears twice", "lines 1 and 4"],
    ),
    (
        "duplicate key",
        "training: {warmup_steps: 20, warmup_steps: 1000}\n",
        [],
        ["'warmup_steps' appears twice", "line 1, columns"],
    ),
    # --- the filesystem, checked before the run directory is created
    ("data folder", None, ["data.paths=[{tmp}/nowhere]"], ["data.paths", "nowhere", "not found"]),
    ("camera", None, ["data.cameras=[front_rgb]"], ["data.cameras", "front_rgb", "agentview_rgb"]),
    ("demo layout", None, ["data.paths=[{bad}]"], ["data.paths", "demo_1", "dtype float32"]),
    ("cut file", None, ["data.paths=[{cut}]"], ["data.paths", "_demo.hdf5", "truncated"]),
    ("vggt ckpt", None, ["model.vggt.checkpoint={tmp}/v.pt"], ["model.vggt.checkpoint", "v.pt"]),
    ("load_from", None, ["checkpoint.load_from={tmp}/old"], ["checkpoint.load_from", "old"]),
    ("resume", None, ["checkpoint.resume={tmp}/iter_9"], ["checkpoint.resume", "iter_9"]),
    ("stats", None, ["data.stats_path={tmp}/s.json"], ["data.stats_path", "s.json"]),
    (
        "language",
        None,
        ["model.language_encoder.name_or_path={tmp}/llama"],
        ["model.language_encoder.name_or_path", "llama", "does not exist"],
    ),
]


@pytest.mark.parametrize(("case", "text", "overrides", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_key_before_anything_is_written(
    case, text, overrides, words, dataset, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may appear here either (e.g. a default save_dir)
    config = DEBUG_YAML
    if text is not None:
        config = tmp_path / "cfg.yaml"
        config.write_text(text)
    fill = {"tmp": tmp_path, "data": dataset}
    if "{cut}" in " ".join(overrides):
        fill["cut"] = _damaged(tmp_path, dataset)
    if "{bad}" in " ".join(overrides):
        fill["bad"] = _bad_demo(tmp_path, dataset)
    base = [
        f"data.paths=[{dataset}]",
        "data.synthetic=null",
        f"checkpoint.save_dir={tmp_path}/run",
        "logging.progress=false",
    ]
    sets = [*base, *(o.format(**fill) for o in overrides)]
    before = set(tmp_path.iterdir())
    code = main(["train", "--config", str(config), *(a for s in sets for a in ("--set", s))])
    err = capsys.readouterr().err
    assert code == 2, err
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert not (tmp_path / "run").exists()
    assert set(tmp_path.iterdir()) == before


def test_debug_shows_the_traceback(tmp_path, monkeypatch) -> None:
    from atlas.config import ConfigError

    args = [
        "train",
        "--set",
        "training.betas=[1.5,0.9]",
        "--set",
        f"checkpoint.save_dir={tmp_path}",
    ]
    with pytest.raises(ConfigError, match="training.betas"):
        main(["--debug", *args])
    with pytest.raises(ConfigError, match="training.betas"):
        main([args[0], "--debug", *args[1:]])
    monkeypatch.setenv("ATLAS_DEBUG", "1")
    with pytest.raises(ConfigError, match="training.betas"):
        main(args)


def test_doctor_runs_the_same_checks(dataset, tmp_path, capsys) -> None:
    sets = [
        f"data.paths=[{dataset}]",
        "data.synthetic=null",
        "data.cameras=[agentview_rgb,front_rgb]",
        f"checkpoint.load_from={tmp_path}/old",
        f"checkpoint.save_dir={tmp_path}/run",
    ]
    code = main(["doctor", "--config", str(DEBUG_YAML), *(a for s in sets for a in ("--set", s))])
    out = capsys.readouterr().out
    assert code == 1
    assert "checkpoint.load_from" in out and "front_rgb" in out
    assert "doctor: 2 problem(s): data.cameras, checkpoint.load_from" in out
    assert not (tmp_path / "run").exists()
