"""Prepared data that cannot be trusted ends in one line: a damaged meta.json, a corrupt or swapped tokenizer;
BPE training stays linear in the corpus size (long runs without separators are cut before training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bigtrain.data import prepare, read_meta
from bigtrain.data.tokenizer import MAX_PIECE, HFTokenizer
from bigtrain.errors import DataError
from tests.conftest import compose


def _prepared(tmp_path: Path, tokenizer: str = "byte", text: str = "some words to tokenize. " * 3000) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "corpus.txt"
    src.write_text(text)
    cfg = compose("data=text", f"data.source={src}", f"data.tokenizer={tokenizer}", "data.bpe_vocab_size=300").data
    cfg.cache_dir = str(tmp_path / "cache")
    return prepare(cfg, progress=False)


def _damage(meta: dict) -> dict[str, object]:
    files = meta["files"]
    return {
        "{}": ({}, "has no 'format_version'"),
        "[]": ([], "should hold a JSON object, got list"),
        "missing vocab_size": ({k: v for k, v in meta.items() if k != "vocab_size"}, "has no 'vocab_size'"),
        "string count": ({**meta, "train_tokens": "many"}, "'train_tokens' should be an integer >= 0, got 'many'"),
        "bool vocab": ({**meta, "vocab_size": True}, "'vocab_size' should be a positive integer"),
        "bad dtype": ({**meta, "dtype": "float64"}, "'dtype' should be one of uint16, uint32"),
        "files a list": ({**meta, "files": []}, "'files' should be an object"),
        "no val.bin": ({**meta, "files": {"train.bin": files["train.bin"]}}, "lists no files.val.bin"),
        "bad sha": (
            {**meta, "files": {**files, "val.bin": {**files["val.bin"], "sha256": "abc"}}},
            "files.val.bin.sha256 should be 64 hex digits",
        ),
    }


def test_damaged_meta_json_is_one_line(tmp_path):
    folder = _prepared(tmp_path)
    meta = read_meta(folder)
    for name, (damaged, message) in _damage(meta).items():
        (folder / "meta.json").write_text(json.dumps(damaged))
        with pytest.raises(DataError) as info:
            read_meta(folder)
        assert message in str(info.value) and "\n" not in str(info.value), (name, str(info.value))
        assert "prepare again" in str(info.value)


def test_tokenizer_is_in_the_manifest(tmp_path):
    folder = _prepared(tmp_path / "a", "bpe")
    meta = read_meta(folder)
    assert meta["format_version"] == 2 and set(meta["files"]) == {"train.bin", "val.bin", "tokenizer.json"}
    tokenizer = folder / "tokenizer.json"
    original = tokenizer.read_bytes()
    other = _prepared(tmp_path / "b", "bpe", "completely different words here. " * 3000) / "tokenizer.json"
    for name, content in {"corrupt": original[:-10] + b"!" * 10, "swapped": other.read_bytes()}.items():
        tokenizer.write_bytes(content)
        with pytest.raises(DataError, match="tokenizer.json (is .* bytes|does not match its sha256)") as info:
            read_meta(folder, verify_checksums=False)  # checked even when the token files are not
        assert "\n" not in str(info.value), name
    tokenizer.write_bytes(original)
    read_meta(folder)


def test_format_1_bpe_preparations_still_read(tmp_path):
    """Preparations from before the tokenizer entry (format 1) are read as before."""
    folder = _prepared(tmp_path, "bpe")
    meta = json.loads((folder / "meta.json").read_text())
    meta["format_version"] = 1
    del meta["files"]["tokenizer.json"]
    (folder / "meta.json").write_text(json.dumps(meta))
    assert read_meta(folder)["tokenizer"] == "bpe"


def test_bpe_pre_tokens_are_capped_and_text_round_trips():
    """A corpus without separators is cut into pieces of at most MAX_PIECE characters before BPE training (whose
    cost grows with the square of a piece's length); text still round-trips."""
    tok = HFTokenizer.train(["x" * 200_000, "def fib(n):\n    return n"], 300)
    pieces = tok._tok.pre_tokenizer.pre_tokenize_str("a" * 1000 + " hello world" + " " * 500)
    assert max(len(piece) for piece, _ in pieces) <= MAX_PIECE
    assert [p for p, _ in pieces if "hello" in p or "world" in p] == ["Ġhello", "Ġworld"]  # words split as before
    text = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # ünïcode ✓ " + "y" * 300
    assert tok.decode(tok.encode(text).tolist()) == text
