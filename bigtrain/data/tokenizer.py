"""Tokenizers: byte-level (no dependency, vocab 256), BPE trained on the corpus with Hugging Face `tokenizers`
(saved beside the prepared data), and GPT-2's BPE through tiktoken when its two files are on this machine."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bigtrain.errors import DataError

TOKENIZERS = ("byte", "bpe", "gpt2")
MAX_PIECE = 64  # characters: the longest run BPE training sees as one pre-token
GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"


class ByteTokenizer:
    """UTF-8 bytes as tokens. Every text round-trips; vocab 256."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers` byte-level BPE (tokenizer.json)."""

    name = "bpe"

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> HFTokenizer:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        # Runs of more than MAX_PIECE non-space (or space) characters are cut into pieces of at most that length
        # before the usual byte-level split: BPE training costs grow with the square of a piece's length, and a
        # corpus without separators (minified code, base64, one repeated symbol) is otherwise one piece of
        # megabytes (3 MB took minutes). Ordinary words are far shorter and split exactly as before.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(rf"\S{{{MAX_PIECE}}}|\s{{{MAX_PIECE}}}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> HFTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        self._tok.save(str(path))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


class TiktokenGPT2:
    """GPT-2's 50257-token BPE via tiktoken, built from local files only (this machine has no network)."""

    name = "gpt2"
    vocab_size = 50257

    def __init__(self, tokenizer_path: str | None = None):
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        vocab_bpe, encoder_json = _gpt2_files(tokenizer_path)
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
        self._enc = tiktoken.Encoding(
            name="gpt2",
            pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 50256},
        )

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._enc.encode_ordinary(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in self._enc.encode_ordinary_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([int(i) for i in ids])


def _gpt2_files(tokenizer_path: str | None) -> tuple[Path, Path]:
    """vocab.bpe and encoder.json from data.tokenizer_path, else from tiktoken's cache; never downloads."""
    if tokenizer_path:
        folder = Path(tokenizer_path).expanduser()
        files = (folder / "vocab.bpe", folder / "encoder.json")
        where = f"data.tokenizer_path={tokenizer_path}"
    else:
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        cache = Path(cache) if cache else Path(tempfile.gettempdir()) / "data-gym-cache"
        files = tuple(
            cache / hashlib.sha1(url.encode()).hexdigest() for url in (GPT2_VOCAB_BPE_URL, GPT2_ENCODER_JSON_URL)
        )
        where = f"tiktoken's cache {cache}"
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"data.tokenizer=gpt2 needs GPT-2's vocab.bpe and encoder.json, not found in {where} "
            f"(missing {', '.join(missing)}); copy them there or set data.tokenizer_path, "
            f"or use data.tokenizer=byte or data.tokenizer=bpe (no download happens here)"
        )
    return files  # type: ignore[return-value]


def check_tokenizer_name(name: str) -> None:
    if name not in TOKENIZERS:
        raise DataError(f"data.tokenizer={name} is unknown; valid: {', '.join(TOKENIZERS)}")


def load_tokenizer(meta: dict, data_dir: Path):
    """The tokenizer a prepared dataset was made with (meta.json's `tokenizer`)."""
    name = meta["tokenizer"]
    check_tokenizer_name(name)
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        return HFTokenizer.load(data_dir / "tokenizer.json")
    return TiktokenGPT2(meta.get("tokenizer_path"))
