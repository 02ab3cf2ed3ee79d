"""Hugging Face GPT-2 export/import: transformers' GPT2LMHeadModel loads the exported directory offline and computes
bigtrain's logits (fp32, within 1e-5) for two sizes, with and without biases; import -> export reproduces every
tensor; models GPT-2 cannot express are refused in one line. Random weights, no download (HF_HUB_OFFLINE)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from bigtrain.errors import BigtrainError
from bigtrain.hf.gpt2 import byte_tokenizer_json, read_hf_config, read_hf_weights, write_hf_dir
from bigtrain.model.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")  # a dev dependency (pyproject [dev])

SIZES = {
    "nano": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=256),
    "small": dict(n_layer=4, n_head=4, n_embd=64, block_size=64, vocab_size=1000),
}


@pytest.fixture(autouse=True, scope="module")
def _offline_one_thread():
    saved_threads, saved_env = torch.get_num_threads(), dict(os.environ)
    torch.set_num_threads(1)  # tiny matrices: one thread beats two on a shared 2-core machine
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    torch.set_num_threads(saved_threads)
    os.environ.clear()
    os.environ.update(saved_env)


def _random_gpt(size: str, bias: bool, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SIZES[size], bias=bias)).eval()
    with torch.no_grad():  # GPT-2 init leaves biases and LayerNorms at 0/1: randomise them so the test sees them
        for name, p in model.named_parameters():
            if name.endswith(".bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("size", list(SIZES))
def test_exported_logits_equal_bigtrain(tmp_path, size, bias):
    model = _random_gpt(size, bias)
    write_hf_dir(model, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert hf.transformer.wte.weight.data_ptr() == hf.lm_head.weight.data_ptr()  # tied on load
    idx = torch.randint(0, model.config.vocab_size, (2, model.config.block_size), generator=torch.Generator())
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert ours.abs().max() > 0.1  # not a degenerate all-zero comparison
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # HF's own cached generation agrees with bigtrain's greedy decoding too.
    prompt = idx[:1, :5]
    ours_gen = model.generate(prompt, 20, temperature=0)
    theirs_gen = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(ours_gen, theirs_gen)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_import_export_round_trip_is_identical(tmp_path, bias):
    model = _random_gpt("small", bias, seed=3)
    write_hf_dir(model, tmp_path / "a")
    config = read_hf_config(tmp_path / "a")
    assert config == model.config
    imported = GPT(config)
    state = read_hf_weights(tmp_path / "a", config)
    state["lm_head.weight"] = state["transformer.wte.weight"]
    imported.load_state_dict(state)
    for name, t in model.state_dict().items():
        assert torch.equal(imported.state_dict()[name], t), name
    write_hf_dir(imported, tmp_path / "b")
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()


def test_head_dim_model_cannot_be_gpt2(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, head_dim=8, block_size=16))
    with pytest.raises(BigtrainError, match=r"head_dim=8 x n_head=2 = 16 differs from n_embd=32.*gpt3-13b"):
        write_hf_dir(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_byte_tokenizer_has_an_hf_form(tmp_path):
    """bigtrain's byte tokenizer as tokenizer.json: transformers' fast tokenizer gives the UTF-8 bytes as ids."""
    byte_tokenizer_json().save(str(tmp_path / "tokenizer.json"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    text = "def f(x):\n\treturn 'héllo ∑ 🙂'  # ok"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_refuses_a_gpt2_it_cannot_reproduce(tmp_path):
    model = _random_gpt("nano", True)
    write_hf_dir(model, tmp_path)
    cfg = transformers.GPT2Config.from_pretrained(tmp_path)
    cfg.activation_function = "relu"
    cfg.save_pretrained(tmp_path)
    with pytest.raises(BigtrainError, match="activation_function=relu"):
        read_hf_config(tmp_path)


def test_gpt2_tokenizer_files_export_and_read_back(tmp_path):
    """tokenizer=gpt2 exports GPT-2's encoder.json/vocab.bpe as vocab.json/merges.txt. Here a small byte-level
    BPE trained on the spot stands in for GPT-2's files (same formats; the real ones need a download)."""
    from bigtrain.data.tokenizer import HFTokenizer
    from bigtrain.hf.gpt2 import read_hf_tokenizer, write_tokenizer

    text = "def main(argv):\n    return sorted(set(argv), key=len)\n" * 50
    bpe = HFTokenizer.train([text], vocab_size=300)
    files = tmp_path / "gpt2-files"
    files.mkdir()
    bpe._tok.model.save(str(files))  # vocab.json + merges.txt, the formats of encoder.json + vocab.bpe
    (files / "vocab.json").rename(files / "encoder.json")
    (files / "merges.txt").rename(files / "vocab.bpe")
    out = tmp_path / "hf"
    out.mkdir()
    written = write_tokenizer(None, {"tokenizer": "gpt2", "tokenizer_path": str(files)}, out, 64)
    assert written == ["vocab.json", "merges.txt", "tokenizer_config.json"]
    sample = "def main(argv):\n    return len(argv)"
    expected = bpe.encode(sample).tolist()
    assert read_hf_tokenizer(out).encode(sample).tolist() == expected
    assert transformers.GPT2Tokenizer(str(out / "vocab.json"), str(out / "merges.txt"))(sample)["input_ids"] == expected
