"""The plain GPT's names <-> tensor parallel's and the pipeline stages' (bigtrain/parallel/param_names.py), in one
process on a nano GPT's tensors: what the layout-neutral reader and loaders rely on. The real multi-process
checkpoints go through them in tests/test_layout_matrix.py."""

from __future__ import annotations

import torch

from bigtrain.model import GPT, gpt_config_from
from bigtrain.parallel.neutral_load import stage_checkpoint
from bigtrain.parallel.param_names import TIED_HEAD, TOKEN_TABLE, fuse_qkv, split_qkv, stage_groups
from bigtrain.parallel.tensor_parallel import SplitQKV
from tests.conftest import compose


def _config(*overrides):
    return gpt_config_from(compose("model=nano", *overrides).model)


def test_split_and_fuse_invert_each_other_and_match_split_qkv_under_grouped_query_attention():
    c = _config("model.n_head=4", "model.n_kv_head=2")  # k and v narrower than q
    gpt = GPT(c)
    whole = {n: p.detach().clone() for n, p in gpt.named_parameters()}
    split = split_qkv(whole, c)
    assert "transformer.h.0.attn.c_attn.weight" not in split
    layer = SplitQKV(gpt.transformer.h[0].attn.c_attn, (c.attn_dim, c.kv_dim, c.kv_dim))
    for part in ("q", "k", "v"):  # the same rows the tensor-parallel model's own SplitQKV takes
        assert torch.equal(split[f"transformer.h.0.attn.c_attn.{part}.weight"], getattr(layer, part).weight)
        assert torch.equal(split[f"transformer.h.0.attn.c_attn.{part}.bias"], getattr(layer, part).bias)
    back = fuse_qkv(split)
    assert back.keys() == whole.keys() and all(torch.equal(back[n], whole[n]) for n in whole)


def test_adam_states_split_with_a_step_tensor_of_their_own():
    c = _config()
    w = torch.randn(3 * c.n_embd, c.n_embd)
    state = {"exp_avg": w, "exp_avg_sq": w.square(), "step": torch.tensor(4.0)}
    parts = split_qkv({"transformer.h.0.attn.c_attn.weight": state}, c)
    steps = [parts[f"transformer.h.0.attn.c_attn.{p}.weight"]["step"] for p in "qkv"]
    steps[0].add_(1)  # torch's AdamW increments each parameter's step in place
    assert [float(s) for s in steps] == [5.0, 4.0, 4.0]
    joined = fuse_qkv({k: {**v, "step": torch.tensor(4.0)} for k, v in parts.items()})
    assert torch.equal(joined["transformer.h.0.attn.c_attn.weight"]["exp_avg_sq"], w.square())


def test_pipeline_stages_slice_a_neutral_file_and_cover_the_model():
    """Each stage's slice holds its blocks in its own optimizer-group order; the last stage's head copy gets the
    token table and its Adam state; together the stages hold every GPT parameter once (plus the copy)."""
    c = _config("model.n_layer=3")
    gpt = GPT(c)
    names = [n for n, _ in gpt.named_parameters()]
    weights = {n: p.detach().clone() for n, p in gpt.state_dict().items()}
    states = {n: {"exp_avg": torch.full_like(weights[n], i), "step": torch.tensor(4.0)} for i, n in enumerate(names)}
    from bigtrain.parallel.neutral import param_groups_by_name

    groups = param_groups_by_name(c)
    flat = [n for g in groups for n in g]
    blob = {
        "state_dict": {f"model.{n}": w for n, w in weights.items()},
        "optimizer_states": [
            {"state": {i: states[n] for i, n in enumerate(flat)}, "param_groups": [{"lr": 1.0}, {"lr": 1.0}]}
        ],
        "bigtrain_neutral": {"param_names": groups},
        "global_step": 4,
    }
    seen = []
    for stage in range(2):
        out = stage_checkpoint(blob, c, stage, 2)
        stage_names = [n for g in stage_groups(c, stage, 2) for n in g]
        osd = out["optimizer_states"][0]
        assert out["global_step"] == 4 and "bigtrain_neutral" not in out
        for i, n in enumerate(stage_names):
            src = TOKEN_TABLE if (stage == 1 and n == TIED_HEAD) else n
            assert torch.equal(out["state_dict"][f"model.{n}"], weights[src])
            assert torch.equal(osd["state"][i]["exp_avg"], states[src]["exp_avg"])
        seen += [n for n in stage_names if not (stage == 1 and n == TIED_HEAD)]
    assert sorted(seen) == sorted(names)
