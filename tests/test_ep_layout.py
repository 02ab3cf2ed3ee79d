"""parallelism.ep as a Layout dimension: set from the command line, refused in one line when it cannot work, read by
the planner (expert memory per rank, all_to_all bytes) and varied by its search. In-process, no training."""

from __future__ import annotations

import pytest

from bigtrain.config import validate
from bigtrain.config.layout import EP_PARALLELISMS
from bigtrain.errors import ConfigError
from tests.conftest import compose

MOE2 = ["model=tiny-moe", "hardware.devices=2", "parallelism=ddp", "trainer.micro_batch_size=4"]


def refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        validate(compose(*overrides))
    line = str(err.value)
    assert "\n" not in line
    return line


def test_ep_from_the_command_line_splits_the_experts():
    layout = validate(compose(*MOE2, "parallelism.ep=2"))
    assert (layout.ep, layout.edp, layout.dp, layout.experts) == (2, 1, 2, 8)
    assert layout.as_dict()["ep"] == 2 and layout.as_dict()["edp"] == 1
    four = validate(
        compose(
            "model=tiny-moe",
            "hardware.devices=4",
            "parallelism=fsdp",
            "zero=2",
            "parallelism.ep=2",
            "trainer.micro_batch_size=4",
        )
    )
    assert (four.ep, four.edp, four.dp_shard) == (2, 2, 4)


@pytest.mark.parametrize(
    "overrides, phrase",
    [
        (
            ["model=tiny-moe", "model.moe.n_experts=6", "hardware.devices=4", "parallelism=ddp", "parallelism.ep=4"],
            "parallelism.ep=4 does not divide model.moe.n_experts=6; valid ep: 1, 2",
        ),
        ([*MOE2, "parallelism.ep=4"], "parallelism.ep=4 exceeds the 2 processes of this run; use ep<=2"),
        (
            [
                "model=tiny-moe",
                "hardware.devices=3",
                "parallelism=ddp",
                "parallelism.ep=2",
                "trainer.global_batch_size=12",
            ],
            "parallelism.ep=2 does not divide the data-parallel size dp=3",
        ),
        (
            ["model=tiny", "hardware.devices=2", "parallelism=ddp", "parallelism.ep=2"],
            "needs a mixture-of-experts model",
        ),
        (
            ["model=tiny-moe", "hardware.devices=2", "parallelism=deepspeed", "zero=2", "parallelism.ep=2"],
            "parallelism=deepspeed cannot split experts (parallelism.ep=2); use parallelism="
            + " or ".join(EP_PARALLELISMS),
        ),
        ([*MOE2, "parallelism.ep=0"], "parallelism.ep=0"),
    ],
)
def test_ep_that_cannot_work_is_refused_in_one_line(overrides, phrase):
    assert phrase in refusal(*overrides)


def test_plan_splits_expert_memory_and_counts_all_to_all_bytes():
    from bigtrain.plan import memory
    from bigtrain.plan.moe import all_to_all_bytes_per_step, expert_params, n_moe_layers
    from bigtrain.plan.params import n_params
    from bigtrain.plan.planner import plan
    from bigtrain.plan.setup import setup_from

    base = [
        "task=plan",
        *MOE2,
        "trainer.precision=32-true",
        "trainer.micro_batch_size=4",
        "trainer.global_batch_size=8",
    ]
    one, two = setup_from(compose(*base)), setup_from(compose(*base, "parallelism.ep=2"))
    e, n = expert_params(one), n_params(one)
    # fp32 Adam, no ZeRO: 4 + 4 + 8 bytes per parameter; ep=2 keeps half the experts on each rank.
    assert sum(memory.model_states(one, n).values()) == 16 * n
    assert sum(memory.model_states(two, n).values()) == 16 * (n - e / 2)
    # Hand count: 4 exchanges x 4 MoE blocks x 1 micro-batch x (1.25 x 2 x 4 x 128 tokens x 192 x 4 bytes) x 1/2.
    assert n_moe_layers(two) == 4 and two.accumulate == 1
    assert all_to_all_bytes_per_step(two, 4) == 4 * 4 * 1 * (1.25 * 2 * 4 * 128 * 192 * 4) / 2
    assert all_to_all_bytes_per_step(one, 4) == 0
    p1, p2 = plan(compose(*base)), plan(compose(*base, "parallelism.ep=2"))
    assert p1["ep_comm_bytes_per_step"] == 0 and p2["ep_comm_bytes_per_step"] == all_to_all_bytes_per_step(two, 4)
    assert p2["expert_state_bytes_per_rank"] == p1["expert_state_bytes_per_rank"] / 2
    assert p2["comm_bytes_per_step"] < p1["comm_bytes_per_step"]  # experts no longer all-reduced over dp


def test_search_varies_ep_for_moe_models_only():
    from bigtrain.plan.search import layouts
    from bigtrain.plan.setup import setup_from

    moe = setup_from(compose("task=plan", "model=mixtral-8x7b", "hardware=h100-80g-x8", "trainer.micro_batch_size=1"))
    tried = {(s.layout.ep, s.layout.parallelism, s.zero) for s, _ in layouts(moe, max_nodes=1)}
    assert {ep for ep, _, _ in tried} == {1, 2, 4, 8}
    assert {(p, z) for ep, p, z in tried if ep > 1} == {("ddp", 0), ("fsdp", 2), ("fsdp", 3)}
    assert all(s.layout.expert_problems() == [] for s, _ in layouts(moe, max_nodes=1))  # each one launchable
    dense = setup_from(compose("task=plan", "model=gpt2-124m", "hardware=h100-80g-x8"))
    assert {s.layout.ep for s, _ in layouts(dense, max_nodes=1)} == {1}
