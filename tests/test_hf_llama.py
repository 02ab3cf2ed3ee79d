"""Hugging Face Llama folders: a Llama-shaped bigtrain model exports as LlamaForCausalLM with the same logits
(multi-head, grouped- and multi-query attention; tied and untied heads), a transformers-made Llama imports with its
logits, the rotary convention (bigtrain's interleaved pairs vs Hugging Face's halves) is bridged and needed, and
task=export / init_from read such a folder. transformers is a test-only dependency."""

from __future__ import annotations

import json

import pytest
import torch

from bigtrain.checkpoint_io import load_model, locate
from bigtrain.hf import llama as hf_llama
from bigtrain.hf import read_hf_config, read_hf_weights, write_hf_dir
from bigtrain.model import GPT, GPTConfig
from tests.conftest import compose

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = 1e-5


def llama_config(**kw) -> GPTConfig:
    base = dict(
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        block_size=24,
        vocab_size=97,
        bias=False,
        norm="rmsnorm",
        mlp="swiglu",
        position="rope",
        rope_theta=500000.0,
        norm_eps=1e-5,
        tie_embeddings=False,
        ffn_hidden_size=80,
    )
    return GPTConfig(**{**base, **kw})


def random_model(config: GPTConfig, seed: int = 0) -> GPT:
    """Random weights everywhere, norm gains included (ones would hide a misplaced gain)."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def hf_logits(folder, idx: torch.Tensor) -> torch.Tensor:
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(idx).logits


@pytest.mark.parametrize(
    "kw",
    [dict(n_kv_head=4), dict(n_kv_head=2), dict(n_kv_head=1), dict(n_kv_head=2, tie_embeddings=True, bias=True)],
    ids=["mha", "gqa", "mqa", "gqa-tied-bias"],
)
def test_exported_logits_equal_bigtrain(tmp_path, kw):
    model = random_model(llama_config(**kw))
    write_hf_dir(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        ours = model(idx)[0]
    torch.testing.assert_close(hf_logits(tmp_path, idx), ours, atol=TOL, rtol=0)


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_import_round_trip_is_identical(tmp_path, n_kv_head):
    model = random_model(llama_config(n_kv_head=n_kv_head))
    write_hf_dir(model, tmp_path)
    config = read_hf_config(tmp_path)
    assert config == model.config
    back = GPT(config)
    back.load_state_dict(read_hf_weights(tmp_path, config))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_a_transformers_llama_imports_with_its_logits(tmp_path, n_kv_head):
    """Made and saved by transformers itself (its own rotary layout), read through bigtrain's checkpoint loader."""
    torch.manual_seed(1)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_head,
        max_position_embeddings=24,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path)
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        expected = hf(idx).logits
    ckpt = locate(tmp_path)
    assert ckpt.kind == "hf" and ckpt.gpt_config.kv_heads == n_kv_head and ckpt.gpt_config.position == "rope"
    with torch.no_grad():
        got = load_model(ckpt)(idx)[0]
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)


def test_rotary_convention_is_bridged_and_needed(tmp_path, monkeypatch):
    """The q/k row permutation is a real reordering with an exact inverse, and leaving it out changes the logits."""
    w = torch.randn(4 * 8, 5)
    assert not torch.equal(hf_llama.to_half_split(w, 4), w)
    assert torch.equal(hf_llama.to_interleaved(hf_llama.to_half_split(w, 4), 4), w)
    model = random_model(llama_config())
    idx = torch.randint(0, 97, (1, 24))
    with torch.no_grad():
        ours = model(idx)[0]
    monkeypatch.setattr(hf_llama, "to_half_split", lambda w, n: w)  # export as if both used the same convention
    write_hf_dir(model, tmp_path)
    assert (hf_logits(tmp_path, idx) - ours).abs().max() > 1e-3


def test_gpt2_shaped_models_still_export_as_gpt2(tmp_path):
    torch.manual_seed(0)
    write_hf_dir(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)).eval(), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_mixed_switches_are_refused(tmp_path):
    from bigtrain.errors import BigtrainError

    for mixed in (dict(mlp="gelu"), dict(norm="layernorm", mlp="gelu", position="learned")):
        with pytest.raises(BigtrainError, match="is neither GPT-2's architecture .* nor Llama's"):
            write_hf_dir(GPT(llama_config(**mixed)), tmp_path)
    with pytest.raises(BigtrainError, match="mixes GPT-2's and Llama's"):
        hf_llama.check_exportable(llama_config(position="learned"))


def test_export_task_and_init_from_read_a_llama_folder(tmp_path):
    from bigtrain.checkpoint_io import check_init_from
    from bigtrain.tasks.export import run as export

    model = random_model(llama_config())
    write_hf_dir(model, tmp_path / "hf")
    info = export(compose("task=export", f"ckpt={tmp_path / 'hf'}", f"export.out_dir={tmp_path / 'again'}"), tmp_path)
    assert info["n_params"] == model.num_params()
    idx = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        ours = model(idx)[0]
    torch.testing.assert_close(hf_logits(tmp_path / "again", idx), ours, atol=TOL, rtol=0)
    shape = ["model=tiny-llama", "model.n_layer=2", "model.n_embd=32", "model.n_head=4", "model.n_kv_head=2"]
    shape += ["model.block_size=24", "model.vocab_size=97", "model.ffn_hidden_size=80", "model.rope_theta=500000.0"]
    check_init_from(compose(*shape, f"init_from={tmp_path / 'hf'}"))  # the run's model is the folder's
