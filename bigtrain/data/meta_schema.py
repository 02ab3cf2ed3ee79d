"""The shape of a prepared dataset's meta.json, checked before any value of it is used.

A damaged file (`{}`, `[]`, a missing key, a string where a count belongs) is one DataError line naming the key
and what it should be, not a KeyError or TypeError deep in the DataModule. Only what bigtrain reads is required;
descriptive fields (source, documents, timings) may be absent.
"""

from __future__ import annotations

import re
from pathlib import Path

from bigtrain.errors import DataError

_SHA256 = re.compile(r"[0-9a-f]{64}")
TOKEN_DTYPES = ("uint16", "uint32")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# key: (test, what it should be)
REQUIRED = {
    "format_version": (lambda v: _count(v) and v >= 1, "a format number >= 1"),
    "tokenizer": (lambda v: isinstance(v, str) and v != "", "a tokenizer name"),
    "vocab_size": (lambda v: _count(v) and v > 0, "a positive integer"),
    "dtype": (lambda v: v in TOKEN_DTYPES, f"one of {', '.join(TOKEN_DTYPES)}"),
    "train_tokens": (_count, "an integer >= 0"),
    "val_tokens": (_count, "an integer >= 0"),
    "files": (lambda v: isinstance(v, dict), "an object of file name -> {bytes, sha256}"),
}


def manifest_problem(name: str, entry) -> str | None:
    if not isinstance(entry, dict):
        return f"files.{name} should be an object {{bytes, sha256}}, got {type(entry).__name__}"
    if not _count(entry.get("bytes")):
        return f"files.{name}.bytes should be an integer >= 0, got {entry.get('bytes')!r}"
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        return f"files.{name}.sha256 should be 64 hex digits, got {entry.get('sha256')!r}"
    return None


def check_meta(meta, meta_path: Path, required_files: tuple[str, ...]) -> None:
    """Raise one DataError when meta (parsed meta.json) lacks what bigtrain reads from it."""
    fix = f"delete {meta_path.parent} and prepare again"
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} should hold a JSON object, got {type(meta).__name__}; {fix}")
    for key, (ok, what) in REQUIRED.items():
        if key not in meta:
            raise DataError(f"{meta_path} has no '{key}' ({what}); {fix}")
        if not ok(meta[key]):
            raise DataError(f"{meta_path}: '{key}' should be {what}, got {meta[key]!r}; {fix}")
    for name in required_files:
        if name not in meta["files"]:
            raise DataError(f"{meta_path} lists no files.{name} (size and sha256); {fix}")
        problem = manifest_problem(name, meta["files"][name])
        if problem:
            raise DataError(f"{meta_path}: {problem}; {fix}")
