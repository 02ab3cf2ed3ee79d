"""Corpus -> tokenizer -> prepared token files -> deterministic, rank-disjoint windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bigtrain.data import check_block_fits, prepare, read_meta
from bigtrain.data.corpus import read_corpus
from bigtrain.data.datamodule import GPTDataModule, TokenWindows
from bigtrain.data.prepare import token_dtype
from bigtrain.data.tokenizer import ByteTokenizer, load_tokenizer
from bigtrain.errors import DataError
from tests.conftest import compose


def data_cfg(tmp_path: Path, **overrides):
    cfg = compose(*(f"data.{k}={v}" for k, v in overrides.items())).data
    cfg.cache_dir = str(tmp_path / "cache")
    return cfg


@pytest.fixture(scope="module")
def byte_dataset(tmp_path_factory):
    return prepare(data_cfg(tmp_path_factory.mktemp("d"), max_bytes=1_000_000), progress=False)


def test_builtin_corpus_is_real_offline_text():
    corpus = read_corpus("stdlib", max_bytes=3_000_000)
    assert corpus.n_bytes > 2_000_000 and len(corpus.documents) > 20
    assert any("def " in d.text for d in corpus.documents)


def test_byte_prepare_writes_memmap_and_metadata(byte_dataset):
    meta = read_meta(byte_dataset)
    assert meta["tokenizer"] == "byte" and meta["vocab_size"] == 256 and meta["dtype"] == "uint16"
    assert meta["train_tokens"] > 10 * meta["val_tokens"] > 0
    assert len(meta["source_fingerprint"]) == 64
    train = np.memmap(byte_dataset / "train.bin", dtype=np.uint16, mode="r")
    assert len(train) == meta["train_tokens"] and train.max() < 256
    # Byte tokens decode back to the source text.
    assert "import" in ByteTokenizer().decode(train[:20000])


def test_prepare_reuses_identical_preparation(byte_dataset, tmp_path):
    cfg = data_cfg(byte_dataset.parent.parent, max_bytes=1_000_000)
    cfg.cache_dir = str(byte_dataset.parent)
    mtime = (byte_dataset / "train.bin").stat().st_mtime_ns
    assert prepare(cfg, progress=False) == byte_dataset
    assert (byte_dataset / "train.bin").stat().st_mtime_ns == mtime


def test_bpe_tokenizer_is_trained_and_saved_beside_the_data(tmp_path):
    folder = prepare(data_cfg(tmp_path, tokenizer="bpe", bpe_vocab_size=512, max_bytes=300_000), progress=False)
    meta = read_meta(folder)
    assert (folder / "tokenizer.json").is_file() and meta["vocab_size"] == 512 and meta["dtype"] == "uint16"
    tok = load_tokenizer(meta, folder)
    text = "def main():\n    return 42\n"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) < len(text.encode())  # merges compress


def test_token_dtype_widens_past_uint16():
    assert token_dtype(256) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(100_000) == np.uint32


def test_user_text_folder_single_file_split(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("hello world. " * 5000)
    folder = prepare(data_cfg(tmp_path, source=str(src), tokenizer="byte"), progress=False)
    meta = read_meta(folder)
    assert meta["train_tokens"] > 0 and meta["val_tokens"] > 0  # one document: the token stream is split


def test_windows_are_deterministic_and_differ_by_rank(byte_dataset):
    meta = read_meta(byte_dataset)
    w = TokenWindows(byte_dataset / "train.bin", meta["dtype"], block_size=16, micro_batch_size=4, seed=7)
    x0, y0 = w[0]
    assert x0.shape == (4, 16) and x0.dtype == torch.int64
    assert torch.equal(x0[:, 1:], y0[:, :-1])  # targets are inputs shifted by one
    again = TokenWindows(byte_dataset / "train.bin", meta["dtype"], 16, 4, seed=7)
    assert torch.equal(again[0][0], x0) and not torch.equal(w[1][0], x0)
    assert not torch.equal(TokenWindows(byte_dataset / "train.bin", meta["dtype"], 16, 4, seed=8)[0][0], x0)

    def first_indices(rank, world):
        dm = GPTDataModule(byte_dataset, 16, 4, accumulate=2, val_batches=2, seed=7, dp_size=world)
        dm.dp_rank = rank
        it = iter(dm.train_dataloader().sampler)
        return [next(it) for _ in range(4)]

    assert first_indices(0, 2) == [0, 2, 4, 6] and first_indices(1, 2) == [1, 3, 5, 7]
    # One process with accumulation 4 sees the union of what two ranks with accumulation 2 see.
    assert sorted(first_indices(0, 2) + first_indices(1, 2)) == first_indices(0, 1) + [4, 5, 6, 7]


def test_corpus_shorter_than_one_block(byte_dataset):
    meta = read_meta(byte_dataset)
    with pytest.raises(DataError, match=r"corpus too short: .* one block needs model.block_size \+ 1 ="):
        check_block_fits(meta, meta["val_tokens"] + 5, byte_dataset)


def test_bad_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare(data_cfg(tmp_path, source=str(tmp_path / "nope.txt")), progress=False)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        prepare(data_cfg(tmp_path, source=str(empty)), progress=False)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1") * 100)
    with pytest.raises(DataError, match="not UTF-8"):
        prepare(data_cfg(tmp_path, source=str(latin)), progress=False)
    with pytest.raises(DataError, match="data.tokenizer=wordpiece is unknown; valid: byte, bpe, gpt2"):
        prepare(data_cfg(tmp_path, tokenizer="wordpiece"), progress=False)


def test_gpt2_tokenizer_without_local_files_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match="needs GPT-2's vocab.bpe and encoder.json.*no download"):
        prepare(data_cfg(tmp_path, tokenizer="gpt2", max_bytes=10_000), progress=False)


def test_truncated_token_file_is_detected(tmp_path):
    folder = prepare(data_cfg(tmp_path, max_bytes=200_000), progress=False)
    with open(folder / "val.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="val.bin is 100 bytes, meta.json says"):
        read_meta(folder)
    assert json.loads((folder / "meta.json").read_text())["files"]["val.bin"]["bytes"] > 100
