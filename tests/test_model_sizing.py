"""model.n_params: a model by size. The chosen shape's count is the planner's exact one (and the torch model's)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import compose, run_bigtrain

from bigtrain.errors import ConfigError
from bigtrain.plan import setup_from
from bigtrain.plan.params import n_params
from bigtrain.plan.sizing import apply_model_size


def _sized(*overrides: str):
    cfg = compose("task=plan", *overrides)
    line = apply_model_size(cfg)
    return cfg, line


@pytest.mark.parametrize(
    ("base", "target"),
    [("gpt3-175b", 1e9), ("gpt3-175b", 7.5e9), ("gpt3-175b", 175e9), ("gpt3-175b", 1e12), ("llama2-7b", 7.5e9)],
)
def test_shape_is_within_half_a_percent_with_heads_of_128(base, target):
    cfg, line = _sized(f"model={base}", f"model.n_params={target}")
    m = cfg.model
    n = n_params(setup_from(cfg))  # what every task's planner and model see
    assert n == pytest.approx(target, rel=0.005)
    assert m.n_embd % 128 == 0 and m.n_embd // m.n_head == 128 and m.head_dim is None
    assert 0.5 < m.n_embd / (128 * m.n_layer) < 2.5  # GPT-3's aspect, as near as the 0.5% allows
    assert f"n_layer={m.n_layer} n_head={m.n_head} n_embd={m.n_embd}" in line and f"{n:,} parameters" in line
    assert m.vocab_size == compose(f"model={base}").model.vocab_size  # the rest of the model group is kept


def test_175b_is_gpt3s_own_shape():
    """GPT-3 175B (Brown et al. 2020, Table 2.1) is exactly the aspect rule: 96 layers x 12288, 96 heads of 128."""
    cfg, _ = _sized("model=gpt3-175b", "model.n_params=175e9")
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (96, 96, 12288)


def test_tensor_parallel_degree_divides_the_heads_and_grouped_query_heads_are_kept():
    cfg, _ = _sized("model=gpt3-175b", "model.n_params=7.5e9", "parallelism.tp=8")
    assert cfg.model.n_head % 8 == 0 and n_params(setup_from(cfg)) == pytest.approx(7.5e9, rel=0.005)
    cfg, _ = _sized("model=llama3-8b", "model.n_params=7.5e9")
    assert cfg.model.n_head % cfg.model.n_kv_head == 0


def test_sizing_is_idempotent():
    cfg, first = _sized("model=gpt3-175b", "model.n_params=7.5e9")
    assert apply_model_size(cfg) == first


def test_the_count_is_the_torch_models():
    """Built on the meta device (no memory): the real GPT's parameter count is the one the sizing chose."""
    import torch

    from bigtrain.model import GPT, gpt_config_from

    cfg, _ = _sized("model=gpt3-175b", "model.n_params=1e9")
    with torch.device("meta"):
        model = GPT(gpt_config_from(cfg.model))
    assert model.num_params() == n_params(setup_from(cfg))


@pytest.mark.parametrize("target", ["-1", "1e5"])
def test_impossible_sizes_are_one_clear_error(target):
    with pytest.raises(ConfigError, match=r"model.n_params="):
        _sized(f"model.n_params={target}")


def test_cli_prints_the_chosen_shape_and_plans_it(tmp_path):
    """Through the real front door: the shape on stderr, the plan (stdout JSON) of that shape."""
    proc = run_bigtrain(
        "task=plan", "plan.format=json", "model=gpt3-175b", "model.n_params=7.5e9", run_dir=tmp_path / "r"
    )
    assert proc.returncode == 0, proc.stderr
    assert "model.n_params=7.5e+09 -> n_layer=" in proc.stderr
    assert math.isclose(json.loads(proc.stdout)["n_params"], 7.5e9, rel_tol=0.005)
