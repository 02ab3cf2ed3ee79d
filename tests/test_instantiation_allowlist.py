"""What a config may make Hydra call: one exact-name allow-list (bigtrain/config/targets.py), applied to the job
config, `hydra.callbacks`, launchers, sweepers and logging factories, from the command line and from recipe files,
before Hydra acts on any of it. The payloads below would create a marker file if they ran (the first test shows
they do when nothing refuses them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, run_bigtrain

from bigtrain.config.targets import ALLOWED_TARGETS, check_config, target_problems
from bigtrain.errors import ConfigError


def _compose_with_hydra(*overrides: str, config_dir: Path = REPO / "conf"):
    from hydra import compose, initialize_config_dir

    from bigtrain.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _group_options(group: str) -> list[str]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def _shipped_choices() -> list[list[str]]:
    """Every option of the groups whose configs name something to call, and every recipe."""
    sets = [[]]
    for group in ("hydra/launcher", "hydra/sweeper", "hydra/job_logging", "hydra/hydra_logging", "recipe"):
        sets += [[f"{group}={option}"] for option in _group_options(group)]
    sets += [["hydra/sweeper=optuna", f"hydra/sweeper/sampler={s}"] for s in _group_options("hydra/sweeper/sampler")]
    return sets


def test_the_payload_is_real(tmp_path):
    """Unchecked, Hydra itself would run it: builtins.open(MARKER, 'w') truncates or creates any file."""
    from hydra.utils import instantiate

    instantiate({"_target_": "builtins.open", "_args_": [str(tmp_path / "ran"), "w"]}).close()
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("choices", _shipped_choices(), ids=lambda c: ",".join(c) or "default")
def test_every_shipped_option_is_allowed(choices):
    """Generated from the config groups: what bigtrain ships (and Hydra's own plugin configs) passes the list."""
    try:
        cfg = _compose_with_hydra(*choices)
    except Exception as e:  # an optional plugin group this environment cannot compose is not ours to check
        pytest.skip(f"{choices}: {type(e).__name__}")
    check_config(cfg)


def test_allow_list_names_classes_that_exist():
    import importlib

    for name in sorted(ALLOWED_TARGETS):
        module, attr = name.rsplit(".", 1)
        try:
            assert callable(getattr(importlib.import_module(module), attr)), name
        except ImportError:  # an optional plugin (submitit, optuna) that is not installed here
            continue


@pytest.mark.parametrize(
    "target",
    [
        "bigtrain.sweep.callback.os.system",  # an attribute chain through an allowed module
        "bigtrain.sweep.callback.SweepReportX",
        "bigtrain.sweep.callback",
        "torch.optim.AdamW.__init__.__globals__",
        "builtins.open",
        "${oc.env:TARGET}",  # the name must be readable in the config
        "BIGTRAIN.SWEEP.CALLBACK.SWEEPREPORT",
    ],
)
def test_exact_names_not_prefixes(target):
    assert target_problems({"hydra": {"callbacks": {"x": {"_target_": target}}}})
    assert target_problems({"notes": [{"deep": {"_target_": target}}]})
    assert not target_problems({"hydra": {"callbacks": {"x": {"_target_": "bigtrain.sweep.callback.SweepReport"}}}})


def test_logging_factories_are_checked():
    bad = {"hydra": {"job_logging": {"handlers": {"h": {"()": "builtins.open"}, "k": {"class": "os.system"}}}}}
    problems = target_problems(bad)
    assert len(problems) == 2 and all("logging factory" in p for p in problems)
    assert not target_problems({"hydra": {"job_logging": {"handlers": {"h": {"class": "logging.StreamHandler"}}}}})
    assert not target_problems({"data": {"class": "anything"}})  # `class` means something only to logging


def test_validate_uses_the_same_list():
    from conftest import compose

    from bigtrain.config.validate import validate

    with pytest.raises(ConfigError, match=r"notes.x._target_=bigtrain.sweep.callback.os.system is not allowed"):
        validate(compose("+notes.x._target_=bigtrain.sweep.callback.os.system"))


def _evil_config_dir(tmp_path: Path, marker: Path) -> Path:
    """A user config folder with a recipe whose hydra section would open (truncate) the marker, and a logging
    config whose handler factory would."""
    conf = tmp_path / "myconf"
    (conf / "recipe").mkdir(parents=True)
    (conf / "recipe" / "evil.yaml").write_text(
        f"# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: builtins.open\n"
        f"      _args_: ['{marker}', w]\n"
    )
    (conf / "hydra" / "job_logging").mkdir(parents=True)
    (conf / "hydra" / "job_logging" / "evil.yaml").write_text(
        f"version: 1\nhandlers:\n  h:\n    '()': builtins.open\n    file: '{marker}'\n    mode: w\n"
    )
    return conf


def _routes(tmp_path: Path, marker: Path) -> dict[str, list[str]]:
    conf = _evil_config_dir(tmp_path, marker)
    opener = [f"+hydra.callbacks.x._args_=[{marker},w]"]
    return {
        "callback": ["+hydra.callbacks.x._target_=builtins.open", *opener],
        "attribute-chain": [
            "+hydra.callbacks.x._target_=bigtrain.sweep.callback.os.system",
            f"+hydra.callbacks.x._args_=['touch {marker}']",
        ],
        "nested-in-allowed": [f"+hydra.callbacks.sweep_report.f={{_target_:builtins.open,_args_:[{marker},w]}}"],
        "recipe-file": ["--config-dir", str(conf), "recipe=evil"],
        "logging": ["--config-dir", str(conf), "hydra/job_logging=evil"],
        "sweep": [
            "-m",
            "+hydra.callbacks.x._target_=bigtrain.sweep.callback.SweepReport,builtins.open",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        "job-config": ["+notes.x._target_=builtins.open", f"+notes.x._args_=[{marker},w]"],
        "rerun-pickle": ["--experimental-rerun", str(tmp_path / "config.pickle")],
    }


ROUTES = ("callback", "attribute-chain", "nested-in-allowed", "recipe-file", "logging", "sweep", "job-config")


@pytest.mark.slow
@pytest.mark.parametrize("route", [*ROUTES, "rerun-pickle"])
def test_cli_refuses_before_anything_runs(route, tmp_path):
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    proc = run_bigtrain(*_routes(tmp_path, marker)[route], "model=nano", run_dir=run_dir)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("bigtrain: error: "), proc.stderr
    assert "is not allowed" in lines[0] or "unpickles" in lines[0]
    assert not marker.exists() and not run_dir.exists() and not (tmp_path / "sweep").exists()


def test_hydra_composition_guard(tmp_path):
    """The backstop: with the guard installed, any composition Hydra does (here the compose API over a recipe
    file) refuses, so a route the command-line check missed could not reach instantiate either."""
    from bigtrain.config.targets import guard_hydra_composition

    marker = tmp_path / "ran"
    conf = _evil_config_dir(tmp_path, marker)
    guard_hydra_composition()
    guard_hydra_composition()  # idempotent
    with pytest.raises(ConfigError, match=r"hydra.callbacks.x._target_=builtins.open is not allowed"):
        _compose_with_hydra(f"hydra.searchpath=[file://{conf}]", "recipe=evil")
    assert not marker.exists()
