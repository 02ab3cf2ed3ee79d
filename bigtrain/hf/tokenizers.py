"""Tokenizer files of a Hugging Face folder, for every architecture: bigtrain's byte, BPE and GPT-2 tokenizers
written in the form transformers reads, and read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bigtrain.errors import BigtrainError


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_tokenizer_json():
    """bigtrain's byte tokenizer (id = UTF-8 byte value) as a Hugging Face byte-level BPE with no merges: each
    byte maps to its own GPT-2 alphabet character, whose id is the byte value."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def write_tokenizer(tokenizer, meta: dict, out: Path, block_size: int) -> list[str]:
    """The tokenizer in the form transformers reads: tokenizer.json (byte, bpe) or vocab.json + merges.txt (gpt2)."""
    name = meta.get("tokenizer")
    common = {"model_max_length": block_size, "bigtrain_tokenizer": name}
    if name == "byte":
        byte_tokenizer_json().save(str(out / "tokenizer.json"))
        files = ["tokenizer.json"]
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **common}
    elif name == "bpe":
        tokenizer.save(out / "tokenizer.json")
        files = ["tokenizer.json"]
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **common}
        config["eos_token"] = config["bos_token"] = "<|endoftext|>"
    elif name == "gpt2":
        from bigtrain.data.tokenizer import _gpt2_files

        vocab_bpe, encoder_json = _gpt2_files(meta.get("tokenizer_path"))
        shutil.copyfile(encoder_json, out / "vocab.json")
        shutil.copyfile(vocab_bpe, out / "merges.txt")
        files = ["vocab.json", "merges.txt"]
        config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
        config.update(common)
    else:
        return []
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return [*files, "tokenizer_config.json"]


def read_hf_tokenizer(folder: Path):
    """A bigtrain-style tokenizer (encode/decode) from a Hugging Face directory's tokenizer files."""
    from bigtrain.data.tokenizer import HFTokenizer

    if (folder / "tokenizer.json").is_file():
        return HFTokenizer.load(folder / "tokenizer.json")
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return HFTokenizer(tok)
    raise BigtrainError(f"{folder} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)")


def eos_id(tokenizer, name: str | None) -> int | None:
    if name == "gpt2":
        return 50256
    if name == "bpe" and tokenizer is not None:
        return tokenizer._tok.token_to_id("<|endoftext|>")
    return None
