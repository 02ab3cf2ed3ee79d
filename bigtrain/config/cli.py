"""Command-line shims around Hydra's override grammar.

Hydra parses `zero=2` as the integer 2, and refuses integers as config-group choices ("Config group override must
be a string or a list. Got int"); its documented workaround is to quote twice (`'zero="2"'`). bigtrain's groups
`zero` (0-3) have numeric option names, and `zero=2` / `-m zero=0,1,2,3` is what users type, so numeric choices
of known groups are quoted before Hydra sees them.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

# The config groups and recipes ship inside the package (bigtrain/conf, recipes in its `recipe` group), so a wheel
# finds them as well as a checkout; users add their own with Hydra's --config-dir or hydra.searchpath.
CONF_DIR = Path(str(files("bigtrain") / "conf"))


def config_groups(conf_dir: Path = CONF_DIR) -> set[str]:
    return {p.name for p in conf_dir.iterdir() if p.is_dir()}


def quote_numeric_group_choices(args: list[str], groups: set[str] | None = None) -> list[str]:
    """`zero=2` -> `zero='2'` and `zero=0,1,2` -> `zero='0','1','2'` for config groups; other args unchanged."""
    groups = config_groups() if groups is None else groups
    out = []
    for arg in args:
        m = re.fullmatch(r"(override\s+|\+\+?|~)?([\w/.-]+)=(\d+(?:,\d+)*)", arg)
        if m and m.group(2) in groups:
            prefix = m.group(1) or ""
            arg = f"{prefix}{m.group(2)}=" + ",".join(f"'{v}'" for v in m.group(3).split(","))
        out.append(arg)
    return out
