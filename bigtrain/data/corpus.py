"""Where text comes from: the built-in corpus (this interpreter's standard-library source, present offline on any
machine with Python) or a user's file or folder. Returns documents in a stable order plus a content fingerprint,
so a prepared dataset can tell whether its source changed."""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from bigtrain.errors import DataError

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".csv", ".html", ".tex", ".c", ".h", ".js", ".yaml", ".yml"}


@dataclass
class Document:
    name: str  # path relative to the corpus root: decides the train/val split
    text: str


@dataclass
class Corpus:
    root: str
    documents: list[Document]
    fingerprint: str  # sha256 over names and contents
    n_bytes: int


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    # Third-party packages are not part of the built-in corpus: they differ between machines. Their folders are
    # pruned from the walk rather than filtered afterwards: site-packages often holds far more files than the
    # stdlib itself, and listing them dominated the start-up of every run.
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in ("site-packages", "dist-packages")]
        files.extend(Path(folder, n) for n in names if n.endswith(".py"))
    return sorted(files)


def _user_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"data.source={path} holds no text files (looked for {', '.join(sorted(TEXT_SUFFIXES))})")
    return files


def read_corpus(source: str, max_bytes: int | None = None) -> Corpus:
    """Read every document of `source` ('stdlib' or a path) as UTF-8 text, up to max_bytes in total.

    The built-in corpus skips the few stdlib files that are deliberately not UTF-8 (encoding test fixtures); a
    user's file that is not UTF-8 is an error naming the file, since silently dropping data hides problems."""
    builtin = source == "stdlib"
    if builtin:
        root = stdlib_root()
        files = _stdlib_files(root)
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise DataError(f"data.source={source} does not exist; give a text file, a folder of them, or 'stdlib'")
        files = _user_files(root)
        root = root if root.is_dir() else root.parent

    digest = hashlib.sha256()
    documents: list[Document] = []
    total = 0
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
        if b"\x00" in raw[:8192]:
            if builtin:
                continue
            raise DataError(f"{path} looks binary (NUL bytes); data.source must be UTF-8 text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if builtin:
                continue
            raise DataError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); re-encode it as UTF-8") from None
        if max_bytes is not None and total + len(raw) > max_bytes:
            break
        name = str(path.relative_to(root)) if path != root else path.name
        digest.update(name.encode() + b"\0" + raw + b"\0")
        documents.append(Document(name, text))
        total += len(raw)
    if total == 0:
        raise DataError(f"data.source={source} is empty (0 bytes of text)")
    return Corpus(str(root), documents, digest.hexdigest(), total)


def is_validation(doc_name: str, val_fraction: float) -> bool:
    """Whole documents go to validation by a hash of their name: stable, no window straddles the split, and
    independent of file order."""
    h = int.from_bytes(hashlib.blake2b(doc_name.encode(), digest_size=8).digest(), "little")
    return (h % 1_000_000) < val_fraction * 1_000_000
