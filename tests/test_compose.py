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


def _check_composes(model: str, parallelism: str, hardware: str) -> None:
    cfg = compose(f"model={model}", f"parallelism={parallelism}", f"hardware={hardware}")
    assert cfg.model.name == model and cfg.hardware.name == hardware
    assert cfg.parallelism.name in PARALLELISMS  # variants (tp-fsdp) keep their strategy's name
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    # Shapes of every shipped model are valid in themselves (batch rules depend on the chosen devices).
    assert not [p for p in problems_of(cfg) if p.startswith("model.")], (model, problems_of(cfg))


def test_every_option_of_model_parallelism_hardware_composes():
    """The quick tier's slice of the product below: every option of each group at least once."""
    groups = [options("model"), options("parallelism"), options("hardware")]
    for i in range(max(map(len, groups))):
        _check_composes(*(g[i % len(g)] for g in groups))


@pytest.mark.slow
def test_every_model_parallelism_hardware_combination_composes():
    combos = list(itertools.product(options("model"), options("parallelism"), options("hardware")))
    for combo in combos:
        _check_composes(*combo)
    assert len(combos) >= 10 * 2 * 5


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


def test_hardware_group_records_what_planner_and_trainer_read():
    for hw in options("hardware"):
        cfg = compose(f"hardware={hw}").hardware
        assert cfg.devices >= 1 and cfg.nodes == 1 and cfg.device_memory_gib > 0 and cfg.host_memory_gib > 0
        assert cfg.price_per_device_hour > 0 and cfg.intra_node_bandwidth_gbps > 0
        assert max(cfg.peak_tflops_bf16, cfg.peak_tflops_fp16) > 0


def test_group_files_only_hold_schema_keys():
    """litgpt's lesson: every shipped YAML key is one the code reads (the schema would reject others at compose
    time, but a group file nobody composes would rot silently): each option composes, and each key its file sets
    arrives in the composed group with the file's value."""
    composed = 0
    for group_dir in Path(CONF).iterdir():
        if group_dir.is_dir() and group_dir.name not in ("recipe", "hydra"):  # recipes: test above; hydra: launchers
            for option in group_dir.glob("*.yaml"):
                node = compose(f"{group_dir.name}={option.stem}")[group_dir.name]
                own = OmegaConf.to_container(OmegaConf.load(option), resolve=False)
                own.pop("defaults", None)
                own = {k: v for k, v in own.items() if v != "???"}  # "required": merging it keeps the base's value
                got = OmegaConf.to_container(node, resolve=False)
                assert {k: got.get(k) for k in own} == own, (group_dir.name, option.stem)
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
