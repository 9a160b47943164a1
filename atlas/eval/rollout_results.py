"""Rollout bookkeeping: one JSONL line per finished episode, resume, and the summary table.

Output folder of one rollout run:

    <out>/
      rollout_config.json    settings that change the numbers (a resume must match them)
      results.jsonl          one EpisodeResult per line, appended as episodes finish
      results.json           summary per task and per suite (rewritten at the end of each run)
      videos/task03_trial000_success.mp4   first K trials of each task
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class EpisodeResult:
    """One finished trial. `steps` counts policy steps (the 10 wait steps excluded)."""

    suite: str
    task_id: int
    task_name: str
    instruction: str
    trial: int
    seed: int
    success: bool
    steps: int
    wall_s: float
    video: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.suite, self.task_id, self.trial)


class ResultsFile:
    """Append-only JSONL of `EpisodeResult`s; what it holds is skipped when a run resumes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[EpisodeResult]:
        """All complete records; a torn last line (a killed run) is ignored."""
        if not self.path.exists():
            return []
        records = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(EpisodeResult(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                log.warning("%s:%d: skipping an unreadable line (interrupted write?)", self.path, n)
        return records

    def done_keys(self) -> set[tuple[str, int, int]]:
        return {r.key for r in self.load()}

    def append(self, result: EpisodeResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(result)) + "\n"
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    # A killed run left a torn last line; end it so this record stays readable.
                    line = "\n" + line
        # One write + flush per line, so a kill loses at most the episode in progress.
        with self.path.open("a") as f:
            f.write(line)
            f.flush()


class RolloutSetupError(ValueError):
    """The run cannot start as asked (bad task ids or trial count, a resume with other settings)."""


def check_run_config(out_dir: Path, settings: dict[str, Any]) -> None:
    """Write `rollout_config.json`, or check a resumed run uses the same settings.

    Mixing episodes run with different seeds, step limits or policies would make the success
    rate meaningless, so a mismatch stops the run before any simulation.
    """
    path = out_dir / "rollout_config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise RolloutSetupError(
                f"{out_dir} holds results of a run with other settings ({lines}); "
                "use another --out or the same settings"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def summarize(results: list[EpisodeResult], task_ids: list[int] | None = None) -> dict[str, Any]:
    """Per-task and per-suite success rate (with trial count) and mean episode length.

    Returns {"suites": {suite: {"success_rate", "successes", "trials", "ci95", "mean_steps",
    "tasks": {task_id: {"task_name", "success_rate", "successes", "trials", "ci95",
    "mean_steps"}}}}, "versions": {package: version}}. `ci95` is the 95% Wilson interval of the
    success rate; `versions` names the simulator stack that produced the numbers (success rates
    in LIBERO move with it). `task_ids` limits the summary to the tasks of this run.
    """
    by_suite: dict[str, dict[int, list[EpisodeResult]]] = {}
    for r in results:
        if task_ids is None or r.task_id in task_ids:
            by_suite.setdefault(r.suite, {}).setdefault(r.task_id, []).append(r)
    suites = {}
    for suite, tasks in sorted(by_suite.items()):
        rows = {
            tid: {"task_name": eps[0].task_name, **_rate(eps)} for tid, eps in sorted(tasks.items())
        }
        suites[suite] = {**_rate([r for eps in tasks.values() for r in eps]), "tasks": rows}
    return {"suites": suites, "versions": stack_versions()}


# Packages whose versions change LIBERO success rates (physics, controller, scenes, policy).
STACK_PACKAGES = ("mujoco", "robosuite", "hf-libero", "libero", "torch")


def stack_versions() -> dict[str, str]:
    """Installed versions of `STACK_PACKAGES` (absent ones are left out)."""
    found = {}
    for name in STACK_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96); (0, 1) with no trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n,
    which closed-loop success rates often are.
    """
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(episodes: list[EpisodeResult]) -> dict[str, Any]:
    n = len(episodes)
    wins = sum(r.success for r in episodes)
    return {
        "success_rate": wins / n if n else 0.0,
        "successes": wins,
        "trials": n,
        "ci95": [round(b, 4) for b in wilson_interval(wins, n)],
        "mean_steps": sum(r.steps for r in episodes) / n if n else 0.0,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table, one row per task and one per suite."""
    lines = [
        f"{'suite':<15} {'task':>4} {'success':>16} {'95% CI':>13} {'mean steps':>10}  task name"
    ]
    for suite, s in summary["suites"].items():
        for tid, t in s["tasks"].items():
            lines.append(
                f"{suite:<15} {tid:>4} {_cell(t):>16} {_ci(t):>13} {t['mean_steps']:>10.1f}  "
                f"{t['task_name']}"
            )
        lines.append(f"{suite:<15} {'all':>4} {_cell(s):>16} {_ci(s):>13} {s['mean_steps']:>10.1f}")
    versions = summary.get("versions")
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def _ci(row: dict[str, Any]) -> str:
    lo, hi = row.get("ci95") or wilson_interval(row["successes"], row["trials"])
    return f"[{100 * lo:.0f}, {100 * hi:.0f}]%"


def _cell(row: dict[str, Any]) -> str:
    return f"{100 * row['success_rate']:5.1f}% ({row['successes']}/{row['trials']})"


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")
