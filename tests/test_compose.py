"""Every shipped config composes, schemas catch typos, and group files hold what the code reads."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from bigtrain.config.cli import CONF_DIR
from bigtrain.config.validate import PARALLELISMS, problems_of
from tests.conftest import compose, run_bigtrain

CONF = CONF_DIR  # bigtrain/conf: the package data a wheel carries


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def recipes() -> list[str]:
    return sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))


def test_groups_exist():
    assert {
        "nano",
        "tiny",
        "gpt2-124m",
        "gpt2-350m",
        "gpt2-774m",
        "gpt2-1.5b",
        "gpt3-2.7b",
        "gpt3-6.7b",
        "gpt3-13b",
        "gpt3-175b",
    } <= set(options("model"))
    assert {"cpu", "a100-40g-x8", "a100-80g-x8", "h100-80g-x8", "v100-32g-x16"} <= set(options("hardware"))
    assert {"single", "ddp"} <= set(options("parallelism"))


@pytest.fixture
def composer():
    """Hydra's compose API initialised once for a test (the composition `compose()` does, without re-initialising
    Hydra for each of a test's compositions); cleared after the test, as `compose()` expects."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bigtrain.config import register_configs
    from bigtrain.config.cli import quote_numeric_group_choices

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: hydra_compose("config", overrides=quote_numeric_group_choices(list(overrides)))


def _groups() -> list[str]:
    """Every config group with options of its own (recipes: tested on their own below; hydra: launchers)."""
    return sorted(d.name for d in Path(CONF).iterdir() if d.is_dir() and d.name not in ("recipe", "hydra"))


@pytest.fixture(scope="module")
def alone():
    """Every option of every group composed once on its own, {(group, option): config}, in one Hydra
    initialisation shared by the tests that read them (composing is nearly all of these tests' time)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bigtrain.config import register_configs
    from bigtrain.config.cli import quote_numeric_group_choices

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return {
            (g, o): hydra_compose("config", overrides=quote_numeric_group_choices([f"{g}={o}"]))
            for g in _groups()
            for o in options(g)
        }


def _check_composes(composer, **choices: str):
    cfg = composer(*(f"{group}={option}" for group, option in choices.items()))
    for group in ("model", "hardware"):
        if group in choices:
            assert cfg[group].name == choices[group], (group, choices)
    if "zero" in choices:
        assert cfg.zero.stage == int(choices["zero"]), choices
    assert cfg.parallelism.name in PARALLELISMS  # variants (tp-fsdp) keep their strategy's name
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    # Shapes of every shipped model are valid in themselves (batch rules depend on the chosen devices).
    assert not [p for p in problems_of(cfg) if p.startswith("model.")], (choices, problems_of(cfg))
    return cfg


PAIRED = ("parallelism", "zero", "offload", "hardware")  # the groups that interact (strategy, sharding, placement)


def covering_rows(groups: dict[str, list[str]], paired: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows choosing one option per group such that every pair of options of two `paired` groups appears in some
    row, and every option of every group appears at least once (a greedy pairwise covering array; deterministic)."""
    uncovered = {
        (a, x, b, y) for i, a in enumerate(paired) for b in paired[i + 1 :] for x in groups[a] for y in groups[b]
    }
    unseen = {(g, o) for g, opts in groups.items() for o in opts}
    rows: list[dict[str, str]] = []
    while uncovered or unseen:
        row: dict[str, str] = {}
        for group, opts in groups.items():  # each option: the one closing most open pairs with the row so far
            gains = [_gain(group, option, row, groups, paired, uncovered, unseen) for option in opts]
            row[group] = opts[gains.index(max(gains))]  # the first of equals: sorted options, reproducible
        uncovered -= {(a, row[a], b, row[b]) for i, a in enumerate(paired) for b in paired[i + 1 :]}
        unseen -= set(row.items())
        rows.append(row)
    return rows


def _gain(group, option, row, groups, paired, uncovered, unseen) -> tuple[int, bool, int]:
    """(open pairs it closes with the row's choices, whether the option is still unseen, open pairs it could close
    with groups not chosen yet)."""
    if group not in paired:
        return (0, (group, option) in unseen, 0)
    now = sum((a, x, group, option) in uncovered for a, x in row.items() if a in paired)
    later = sum((group, option, b, y) in uncovered for b in paired if b not in row for y in groups[b])
    return (now, (group, option) in unseen, later)


def test_covering_rows_cover_every_pair_and_option():
    """The generator itself: on the real groups, no pair of the paired groups and no option is left out."""
    groups = {g: options(g) for g in ("model", *PAIRED)}
    rows = covering_rows(groups, PAIRED)
    for g, opts in groups.items():
        assert {r[g] for r in rows} == set(opts), g
    for i, a in enumerate(PAIRED):
        for b in PAIRED[i + 1 :]:
            assert {(r[a], r[b]) for r in rows} == set(itertools.product(groups[a], groups[b])), (a, b)
    assert len(rows) < len(list(itertools.product(*groups.values()))) / 10  # a covering set, not the product


def test_every_option_of_model_parallelism_hardware_composes(composer):
    """The quick tier's slice of the covering set below: every option of each group at least once."""
    groups = {g: options(g) for g in ("model", "parallelism", "hardware")}
    for i in range(max(map(len, groups.values()))):
        _check_composes(composer, **{g: opts[i % len(opts)] for g, opts in groups.items()})


@pytest.mark.slow
def test_every_pair_of_parallelism_zero_offload_hardware_composes_with_every_model(composer, alone):
    """Generated from the config groups: every option of model, parallelism, zero, offload and hardware, and every
    pair of options of (parallelism, zero, offload, hardware), composes and resolves. Pairs suffice because no
    group reads another's values, which the test checks too: each option's composed node, resolved, is the same
    alone and in every row, so any combination of options is the union of nodes checked here (and the model-shape
    rules read the model alone)."""
    groups = {g: options(g) for g in ("model", *PAIRED)}
    rows = covering_rows(groups, PAIRED)
    for row in rows:
        cfg = _check_composes(composer, **row)
        for g, o in row.items():
            assert OmegaConf.to_container(cfg[g], resolve=True) == OmegaConf.to_container(
                alone[g, o][g], resolve=True
            ), (g, o, row)
    assert len(rows) >= max(len(groups["parallelism"]) * len(groups["hardware"]), len(groups["model"]))


@pytest.mark.parametrize("recipe", recipes())
def test_every_recipe_composes_and_documents_itself(recipe):
    text = (CONF / "recipe" / f"{recipe}.yaml").read_text()
    assert text.startswith("# @package _global_"), "recipes are global packages"
    assert "python -m bigtrain" in text, "a recipe's header gives its launch command"
    cfg = compose(f"recipe={recipe}")
    OmegaConf.to_container(cfg, resolve=True)


def test_default_is_the_cpu_tiny_recipe():
    default, recipe = compose(), compose("recipe=cpu-tiny")
    for key in ("model", "hardware", "parallelism", "data", "trainer"):
        assert default[key] == recipe[key], key
    assert problems_of(default) == []


@pytest.mark.parametrize(
    "override",
    ["model.n_layr=3", "trainer.max_step=10", "hardware.gpus=8", "model.n_layer=three", "bogus_key=1"],
)
def test_schema_rejects_typos_and_wrong_types_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        compose(override)


def test_unknown_group_option_is_a_compose_error():
    with pytest.raises(ConfigCompositionException, match="gpt2-125m"):
        compose("model=gpt2-125m")


def test_hardware_group_records_what_planner_and_trainer_read(alone):
    for hw in options("hardware"):
        cfg = alone["hardware", hw].hardware
        assert cfg.devices >= 1 and cfg.nodes == 1 and cfg.device_memory_gib > 0 and cfg.host_memory_gib > 0
        assert cfg.price_per_device_hour > 0 and cfg.intra_node_bandwidth_gbps > 0
        assert max(cfg.peak_tflops_bf16, cfg.peak_tflops_fp16) > 0


def test_group_files_only_hold_schema_keys(alone):
    """litgpt's lesson: every shipped YAML key is one the code reads (the schema would reject others at compose
    time, but a group file nobody composes would rot silently): each option composes, and each key its file sets
    arrives in the composed group with the file's value."""
    composed = 0
    for group in _groups():
        for option in options(group):
            node = alone[group, option][group]
            own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"), resolve=False)
            own.pop("defaults", None)
            own = {k: v for k, v in own.items() if v != "???"}  # "required": merging it keeps the base's value
            got = OmegaConf.to_container(node, resolve=False)
            assert {k: got.get(k) for k in own} == own, (group, option)
            composed += 1
    assert composed >= len(options("model")) + len(options("parallelism")) + len(options("hardware"))


def test_numeric_group_choices_work_as_users_type_them():
    from bigtrain.config.cli import quote_numeric_group_choices

    assert quote_numeric_group_choices(["zero=2", "trainer.max_steps=5", "-m"]) == [
        "zero='2'",
        "trainer.max_steps=5",
        "-m",
    ]
    assert quote_numeric_group_choices(["zero=0,1,2,3"]) == ["zero='0','1','2','3'"]
    assert compose("zero=3").zero.stage == 3


def test_user_config_dirs_add_recipes_beside_the_packaged_ones(tmp_path):
    """Configs ship inside the package; a user's own folder joins them through Hydra's search path."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: nano\nplan:\n  format: json\n"
    )
    proc = run_bigtrain(f"hydra.searchpath=[file://{tmp_path}]", "recipe=mine", "task=plan", run_dir=tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from bigtrain.plan import plan

    assert json.loads(proc.stdout)["n_params"] == plan(compose("task=plan", "model=nano"))["n_params"]
