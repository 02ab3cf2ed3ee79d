"""Lightning without the optional libraries that torchmetrics imports on the side.

`import pytorch_lightning` imports torchmetrics (lightning_fabric compares its version), and torchmetrics imports
transformers (BERTScore), scipy (audio) and matplotlib (plots) at import time whenever they are installed: seconds
of start-up and ~100 MiB of resident memory in every rank of a run that uses none of them (bigtrain computes no
torchmetrics metric). torchmetrics decides through lightning_utilities' `RequirementCache` flags and its
`package_available`; while Lightning is first imported on the train path, both answer 'not installed' for the
libraries below, so torchmetrics skips them. Only what is created or bound during that import sees it (torchmetrics'
own flags); bigtrain's own users of these libraries (the Hugging Face export, the sweep plots) import them directly
and are unaffected.
"""

from __future__ import annotations

import sys

# Top-level distributions torchmetrics imports only when its flags say they are installed.
SKIPPED = frozenset({"transformers", "scipy", "matplotlib"})


def _names(cache) -> set[str]:
    names = set()
    if cache.module:
        names.add(cache.module.split(".")[0])
    if cache.requirement:
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            names.add(Requirement(cache.requirement).name)
        except InvalidRequirement:
            pass
    return names


def import_lightning_lean() -> None:
    """Import pytorch_lightning with torchmetrics' optional extras switched off; a no-op once it is imported."""
    if "pytorch_lightning" in sys.modules or "torchmetrics" in sys.modules:
        return
    from lightning_utilities.core import imports as lightning_utilities_imports
    from lightning_utilities.core.imports import RequirementCache

    original = RequirementCache._check_available
    original_package_available = lightning_utilities_imports.package_available

    def package_available(name: str) -> bool:
        return name.split(".")[0] not in SKIPPED and original_package_available(name)

    def check_available(self) -> None:
        if not hasattr(self, "available") and _names(self) & SKIPPED:
            self.available = False
            self.message = "skipped by bigtrain on the train path (bigtrain/training/lean_imports.py)"
            return
        original(self)

    RequirementCache._check_available = check_available
    lightning_utilities_imports.package_available = package_available
    try:
        import pytorch_lightning  # noqa: F401
    finally:
        RequirementCache._check_available = original
        lightning_utilities_imports.package_available = original_package_available
