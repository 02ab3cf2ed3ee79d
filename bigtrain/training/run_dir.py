"""One run per run directory: what `task=train` finds there before it writes anything.

- A directory holding an earlier run (its config, metrics, checkpoints or summary) is refused unless the run says
  `resume`: two runs merged into one folder would mix metrics rows, and replace checkpoints while `last.ckpt` and
  the summary still describe the old run.
- `resume=auto` on a run that completed its trainer.max_steps has nothing to do: it says so and returns the
  recorded summary, untouched (a re-run would rewrite it with null losses and no throughput).
- Temporary files a killed process left behind (`.NAME.tmp-PID` from atomic checkpoint writes, `*.tmp` of the
  config and summary, `NAME.tmp-PID` folders of a killed data preparation) are removed, when their process is gone.
"""

from __future__ import annotations

import json
from pathlib import Path

from bigtrain.atomic import remove_stale
from bigtrain.errors import ConfigError

# What a training run writes into its directory; any of them means the directory holds a run.
RUN_FILES = ("config.yaml", "summary.json", "metrics.csv", "checkpoints")


def earlier_run(run_dir: Path) -> list[str]:
    """The names of RUN_FILES present (an empty checkpoints folder does not count)."""
    found = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def completed_summary(run_dir: Path, max_steps: int) -> dict | None:
    """summary.json of a run in run_dir that completed at least max_steps, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != "completed":
        return None
    steps = summary.get("steps")
    return summary if isinstance(steps, int) and steps >= max_steps else None


def claim(run_dir: Path, resume: str | None, max_steps: int, log=print) -> dict | None:
    """Check run_dir may take this run and clear what killed processes left there. Returns the recorded summary
    when `resume` names this directory's run and it is already complete (nothing to do), else None."""
    found = earlier_run(run_dir)
    if found and resume is None:
        raise ConfigError(
            f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); continue it with resume=auto, "
            f"or give this run a new hydra.run.dir (runs are never merged)"
        )
    resumes_here = resume == "auto" or (resume is not None and _same_dir(Path(resume), run_dir))
    if found and resumes_here:
        done = completed_summary(run_dir, max_steps)
        if done is not None:
            log(
                f"bigtrain: the run in {run_dir} already completed {done['steps']} steps (trainer.max_steps="
                f"{max_steps}); nothing to resume. Raise trainer.max_steps to train further."
            )
            return done
    removed = clean_stale_temporaries(run_dir)
    if removed:
        log(f"bigtrain: removed {len(removed)} temporary file(s) a killed run left: {', '.join(removed[:5])}")
    return None


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.resolve()
    except OSError:
        return False


def clean_stale_temporaries(run_dir: Path) -> list[str]:
    """Temporary files of killed writers in run_dir and its checkpoints folder. Rank zero calls this before any
    process of this run starts, so only a dead process can own them (the PID check guards against the rest)."""
    from bigtrain.training.checkpointing import CHECKPOINT_DIR

    removed = remove_stale(run_dir) + remove_stale(run_dir / CHECKPOINT_DIR)
    for name in ("config.yaml.tmp", "summary.json.tmp"):  # written without a PID by rank zero alone
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
    return removed
