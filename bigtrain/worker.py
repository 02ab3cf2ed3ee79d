"""Entry point of the extra local ranks: `python -m bigtrain.worker [--wait [--preload=MODULE]...] RUN_DIR`.

Rank zero composed and validated the config under Hydra and recorded it in RUN_DIR/config.yaml; the other ranks
train from exactly that file (see bigtrain/parallel/launcher.py for why they do not re-run Hydra).

`--wait`: started early by rank zero (bigtrain/parallel/prestart.py), the rank imports what training needs, then
waits for one line on stdin: its environment and working directory from the launcher. It reads RUN_DIR only after
that line (rank zero wrote the config before launching). Stdin closing without a line means rank zero stopped
before launch: the rank exits at once, status 0, whatever it was doing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Environment variables Lightning's launcher sets for a rank and that are read only when training starts (no
# module reads them at import, except Lightning's rank_zero_only, which wait_then_train sets again): a waiting
# rank takes these late. Any other difference and it restarts as a fresh interpreter with the exact environment.
LAUNCH_VARS = frozenset(
    {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS"}
)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--wait":
        preload = tuple(arg.split("=", 1)[1] for arg in argv[1:-1] if arg.startswith("--preload="))
        return wait_then_train(Path(argv[-1]), preload)
    from bigtrain.config.run_config import load_run_config
    from bigtrain.errors import BigtrainError
    from bigtrain.tasks.train import fit_then_leave

    run_dir = Path(argv[0])
    try:
        fit_then_leave(load_run_config(run_dir), run_dir)
    except BigtrainError as e:  # rank zero reports the same error; no traceback here either
        print(f"bigtrain: error (rank {os.environ.get('LOCAL_RANK')}): {e}", file=sys.stderr)
        sys.exit(2)


def wait_then_train(run_dir: Path, preload: tuple[str, ...]) -> None:
    import signal
    import threading

    # Ctrl-C reaches the whole process group: rank zero stops, and this rank leaves when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line: list[bytes] = []
    arrived = threading.Event()

    def read_launch_line() -> None:
        got = sys.stdin.buffer.readline()
        if not got.strip():
            os._exit(0)  # rank zero stopped before launch; nothing of this rank's is written or held
        line.append(got)
        arrived.set()

    threading.Thread(target=read_launch_line, daemon=True).start()
    from bigtrain.tasks._fit_imports import import_for_fit

    import_for_fit(preload)
    arrived.wait()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import json

    launch = json.loads(line[0])
    env, cwd = launch["env"], launch["cwd"]
    changed = changed_since_imports(env, dict(os.environ))
    os.chdir(cwd)
    if changed:  # imports may have read these: start over as the launcher would have, with exactly this environment
        print(f"bigtrain: note: rank {env.get('LOCAL_RANK')} restarts: {', '.join(changed)} changed", file=sys.stderr)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "bigtrain.worker", str(run_dir)], env)
    os.environ.clear()
    os.environ.update(env)
    from lightning_fabric.utilities.rank_zero import _get_rank, rank_zero_only

    rank_zero_only.rank = _get_rank() or 0  # read from the environment at import, before this rank had one
    main([str(run_dir)])


def changed_since_imports(handed: dict[str, str], current: dict[str, str]) -> list[str]:
    """The variables, other than the launch ones, in which the handed environment differs from this process's
    after its imports (which set some themselves, e.g. Lightning's PYTORCH_NVML_BASED_CUDA_CHECK, as rank zero's
    did)."""
    keys = (set(handed) | set(current)) - LAUNCH_VARS
    return sorted(k for k in keys if handed.get(k) != current.get(k))


if __name__ == "__main__":
    main(sys.argv[1:])
