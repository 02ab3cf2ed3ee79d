"""Where DeepSpeed's JIT-compiled ops live, so each is compiled once per machine, not once per run.

DeepSpeed builds C++ ops (cpu_adam ~1 min, async_io ~3 min on 2 cores) on first use through torch's
cpp_extension, into TORCH_EXTENSIONS_DIR. A build is only valid for the CPU it was compiled for (DeepSpeed passes
-march=native) and the DeepSpeed / torch / Python that built it, so the folder is keyed by all four. Lightning
worker processes inherit the variable; `.ci/run` exports it (`python -m bigtrain.parallel.ops_cache` prints it).

Imports no deepspeed: versions are read from package metadata.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from importlib.metadata import version
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name plus a short hash of its instruction-set flags (virtual CPUs often share one name)."""
    name, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name}-{hashlib.sha1(flags.encode()).hexdigest()[:8]}" if flags else name


def extensions_dir() -> Path:
    """The keyed cache folder: ~/.cache/bigtrain/torch_extensions/<cpu>-ds<ver>-torch<ver>-py<ver>."""
    key = f"{cpu_model()}-ds{version('deepspeed')}-torch{version('torch')}-py{sys.version_info[0]}{sys.version_info[1]}"
    key = re.sub(r"[^A-Za-z0-9.+-]+", "_", key).strip("_")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bigtrain" / "torch_extensions"
    return root / key


def use_extensions_cache() -> str:
    """Point TORCH_EXTENSIONS_DIR at the keyed cache unless the user already chose a folder; return it."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    return os.environ["TORCH_EXTENSIONS_DIR"]


if __name__ == "__main__":
    print(extensions_dir())
