"""`task=prepare`: text -> memory-mapped token files + metadata, once per (source, tokenizer) fingerprint.

Layout of a prepared dataset folder (under data.cache_dir):
    train.bin, val.bin   flat token ids, uint16 when the vocabulary fits, else uint32
    meta.json            tokenizer, vocab size, dtype, token counts, source fingerprint, file sizes and sha256
    tokenizer.json       the trained BPE (tokenizer=bpe only)
The folder is built under a temporary name and renamed into place, so a crash never leaves half-written token
files that a later run would load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from bigtrain.atomic import remove_stale
from bigtrain.data.corpus import is_validation, read_corpus
from bigtrain.data.meta_schema import check_meta
from bigtrain.data.tokenizer import ByteTokenizer, HFTokenizer, TiktokenGPT2, check_tokenizer_name
from bigtrain.errors import DataError

# 2: tokenizer.json (tokenizer=bpe) is in the sha256 manifest.
FORMAT_VERSION = 2
STALE_PREPARE_S = 3600.0  # a preparation's temporary folder untouched this long, its process gone, is a leftover


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_dir(data_cfg, fingerprint: str) -> Path:
    key = hashlib.sha256(
        json.dumps(
            [FORMAT_VERSION, fingerprint, data_cfg.tokenizer, data_cfg.bpe_vocab_size, data_cfg.val_fraction],
        ).encode()
    ).hexdigest()[:16]
    return Path(data_cfg.cache_dir).expanduser() / f"{data_cfg.name}-{data_cfg.tokenizer}-{key}"


CHECKSUM_LIMIT = 1 << 30  # bytes: token files up to 1 GiB are checksummed on every load


TOKENIZER_FILE = "tokenizer.json"


def manifest_files(meta: dict) -> tuple[str, ...]:
    """The files meta.json must list with size and sha256: the token files, and the trained BPE (from format 2;
    format 1 preparations predate its entry and are read as before)."""
    bpe = isinstance(meta, dict) and meta.get("tokenizer") == "bpe" and meta.get("format_version", 1) >= 2
    return ("train.bin", "val.bin", TOKENIZER_FILE) if bpe else ("train.bin", "val.bin")


def read_meta(folder: Path, verify_checksums: bool = True) -> dict:
    """meta.json of a prepared dataset, after checking the token files are whole (sizes match)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{folder} is not a prepared dataset (no meta.json); run `python -m bigtrain task=prepare`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path} is corrupt ({e.msg}); delete {folder} and prepare again") from None
    check_meta(meta, meta_path, manifest_files(meta))
    if meta["vocab_size"] > 2**16 and meta["dtype"] == "uint16":
        raise DataError(
            f"{meta_path}: vocab_size {meta['vocab_size']} does not fit the uint16 token files (max 65536); "
            f"delete {folder} and prepare again (bigtrain stores such vocabularies as uint32)"
        )
    for name in manifest_files(meta):
        f = folder / name
        manifest = meta["files"][name]
        if not f.is_file() or f.stat().st_size != manifest["bytes"]:
            actual = f.stat().st_size if f.is_file() else "missing"
            raise DataError(
                f"{f} is {actual} bytes, meta.json says {manifest['bytes']}; delete {folder} and prepare again"
            )
        # Checksums too, where that is cheap next to training (a full pass over a GB-scale file would not be); the
        # tokenizer always (a corrupt or swapped one would only show at sampling, after training).
        small = manifest["bytes"] <= CHECKSUM_LIMIT
        if (verify_checksums and small or name == TOKENIZER_FILE) and _sha256(f) != manifest["sha256"]:
            raise DataError(
                f"{f} does not match its sha256 in meta.json (corrupted); delete {folder} and prepare again"
            )
    return meta


def prepare(data_cfg, progress: bool = True) -> Path:
    """Prepare data_cfg's corpus (or reuse an identical earlier preparation) and return the dataset folder."""
    check_tokenizer_name(data_cfg.tokenizer)
    if not 0.0 < data_cfg.val_fraction < 1.0:
        raise DataError(f"data.val_fraction={data_cfg.val_fraction} must be between 0 and 1 (exclusive)")
    corpus = read_corpus(data_cfg.source, data_cfg.max_bytes)
    folder = dataset_dir(data_cfg, corpus.fingerprint)
    if (folder / "meta.json").is_file():
        return folder

    t0 = time.perf_counter()
    train_docs = [d.text for d in corpus.documents if not is_validation(d.name, data_cfg.val_fraction)]
    val_docs = [d.text for d in corpus.documents if is_validation(d.name, data_cfg.val_fraction)]

    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    # Folders of killed preparations; the cache may be shared by several hosts, whose PIDs this one cannot see.
    remove_stale(folder.parent, "*.tmp-*", min_age_s=STALE_PREPARE_S)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if data_cfg.tokenizer == "byte":
            tok, eot = ByteTokenizer(), None
        elif data_cfg.tokenizer == "bpe":
            tok = HFTokenizer.train(train_docs or val_docs, data_cfg.bpe_vocab_size)
            tok.save(tmp / TOKENIZER_FILE)
            eot = tok._tok.token_to_id("<|endoftext|>")
        else:
            tok, eot = TiktokenGPT2(data_cfg.tokenizer_path), 50256
        dtype = token_dtype(tok.vocab_size)
        train = encode_documents(tok, train_docs, eot, dtype, progress)
        val = encode_documents(tok, val_docs, eot, dtype, progress)
        if len(val) == 0 or len(train) == 0:
            # Too few documents for a document-level split (one file, say): split the token stream instead.
            stream = np.concatenate([train, val])
            cut = int(len(stream) * (1 - data_cfg.val_fraction))
            train, val = stream[:cut], stream[cut:]
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        meta = {
            "format_version": FORMAT_VERSION,
            "tokenizer": data_cfg.tokenizer,
            "tokenizer_path": data_cfg.tokenizer_path,
            "vocab_size": int(tok.vocab_size),
            "dtype": dtype.name,
            "train_tokens": int(len(train)),
            "val_tokens": int(len(val)),
            "documents": len(corpus.documents),
            "source": data_cfg.source,
            "source_root": corpus.root,
            "source_bytes": corpus.n_bytes,
            "source_fingerprint": corpus.fingerprint,
            "val_fraction": data_cfg.val_fraction,
            "files": {
                name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                for name in ("train.bin", "val.bin", TOKENIZER_FILE)
                if (tmp / name).is_file()
            },
            "prepare_s": round(time.perf_counter() - t0, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process prepared the same data meanwhile (its folder is complete by construction).
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def encode_documents(tok, docs: list[str], eot: int | None, dtype: np.dtype, progress: bool = False) -> np.ndarray:
    """One flat token stream of `docs` (with `eot` after each document when given), in the on-disk dtype."""
    parts: list[np.ndarray] = []
    batch = 256
    for i in _progress(range(0, len(docs), batch), len(docs) // batch + 1, "tokenizing", progress):
        for ids in tok.encode_batch(docs[i : i + batch]):
            parts.append(ids)
            if eot is not None:
                parts.append(np.array([eot], dtype=np.int64))  # document separator
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _progress(it, total: int, what: str, enabled: bool):
    if not enabled or total < 8:
        yield from it
        return
    from rich.progress import track

    yield from track(it, total=total, description=what, transient=True)


def check_block_fits(meta: dict, block_size: int, folder: Path) -> None:
    """Each split must hold at least one training window (block_size + 1 tokens)."""
    need = block_size + 1
    for split in ("train", "val"):
        have = meta[f"{split}_tokens"]
        if have < need:
            raise DataError(
                f"corpus too short: the {split} split of {folder.name} has {have} tokens, one block needs "
                f"model.block_size + 1 = {need}; use a larger corpus or a smaller model.block_size (< {have})"
            )
