"""What a config may make Python call: one allow-list of exact qualified names, checked before Hydra acts on it.

Hydra's `instantiate` imports and calls whatever `_target_` names, at any depth: in `hydra.callbacks` (built
before the task function runs), the launcher, the sweeper and its sampler. `logging.config.dictConfig` does the
same for `class` and `()` in `hydra.job_logging` / `hydra.hydra_logging`, configured even earlier. A prefix rule
("bigtrain.") is not enough: `bigtrain.sweep.callback.os.system` resolves through the module's `import os`. So
names are compared exactly, interpolations are refused (the name must be readable in the config), and the check
runs on the config exactly as Hydra composes it (job and hydra nodes, recipes included) in two places:
`check_command_line` before Hydra starts (one `bigtrain: error:` line), and `guard_hydra_composition`, which makes
every later composition inside Hydra (each sweep point, a launcher's) refuse the same.
"""

from __future__ import annotations

from typing import Any

from bigtrain.errors import ConfigError

# Everything bigtrain's shipped configs and Hydra's own (launchers, sweepers, samplers) instantiate; the test
# composes every option of those groups and every recipe against this list.
ALLOWED_TARGETS = frozenset(
    {
        "bigtrain.sweep.callback.SweepReport",
        "bigtrain.config.redact_hydra_files.RedactHydraFiles",
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "optuna.samplers.TPESampler",
        "optuna.samplers.RandomSampler",
        "optuna.samplers.CmaEsSampler",
        "optuna.samplers.NSGAIISampler",
        "optuna.samplers.MOTPESampler",
        "optuna.samplers.GridSampler",
        "torch.optim.AdamW",  # the optimizer bigtrain trains with (a free-form section may record it)
    }
)
# logging.config.dictConfig factories (`class` of a handler, `()` of a formatter/filter/handler).
ALLOWED_LOGGING = frozenset(
    {
        "logging.StreamHandler",
        "logging.FileHandler",
        "logging.NullHandler",
        "logging.Formatter",
        "logging.handlers.RotatingFileHandler",
        "logging.handlers.WatchedFileHandler",
        "colorlog.ColoredFormatter",
    }
)
_LOGGING_SECTIONS = ("hydra.job_logging", "hydra.hydra_logging")


def target_problems(node: Any, path: str = "") -> list[str]:
    """One phrase per `_target_` (anywhere) or logging factory (under hydra.*_logging) that is not allowed."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            in_logging = path.startswith(_LOGGING_SECTIONS)
            if key == "_target_":
                found += _refuse(where, value, ALLOWED_TARGETS, "_target_")
            elif key == "()" or (key == "class" and in_logging):
                found += _refuse(where, value, ALLOWED_LOGGING, "a logging factory")
            found += target_problems(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += target_problems(item, f"{path}[{i}]")
    return found


def _refuse(where: str, value: Any, allowed: frozenset[str], what: str) -> list[str]:
    if isinstance(value, str) and value in allowed:
        return []
    shown = f"'{value}'" if not isinstance(value, str) or "${" in value else value
    examples = _EXAMPLES[what]
    return [
        f"{where}={shown} is not allowed: {what} must be exactly one of the names in bigtrain/config/targets.py "
        f"({examples}), compared whole, not by prefix, because Hydra calls what a config names"
    ]


_EXAMPLES = {
    "_target_": "bigtrain.sweep.callback.SweepReport, Hydra's and its plugins' launchers and sweepers, optuna "
    "samplers, torch.optim.AdamW",
    "a logging factory": ", ".join(sorted(ALLOWED_LOGGING)),
}


def check_config(cfg) -> None:
    """ConfigError listing every disallowed name of a composed config (job and, when present, hydra nodes)."""
    from omegaconf import OmegaConf

    problems = target_problems(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
    if problems:
        raise ConfigError("; ".join(problems))


def check_command_line(args: list[str], conf_dir) -> bool:
    """Compose what `python -m bigtrain ARGS` would run, as Hydra is about to (same parser, search path, config
    name and run mode; sweep values expanded), and refuse disallowed names before Hydra configures logging or
    builds a callback. A composition error is left for Hydra (and bigtrain's precheck) to report. True when the
    config composed (so a precheck of the same composition has nothing left to find)."""
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser

    parsed, _ = get_args_parser().parse_known_args(args)
    if parsed.experimental_rerun is not None:
        raise ConfigError(
            f"--experimental-rerun {parsed.experimental_rerun} is refused: it unpickles a file (which can run any "
            f"code); rerun with the overrides of that run's .hydra/overrides.yaml instead"
        )
    if parsed.shell_completion or parsed.help or parsed.hydra_help:
        return False
    _check_sweep_values(parsed.overrides)
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    search_path = create_automatic_config_search_path(None, None, str(parsed.config_path or conf_dir))
    if parsed.config_dir is not None:  # where Hydra's own _run_hydra puts it
        import os

        from hydra.core.config_search_path import SearchPathQuery

        search_path.prepend("command-line", f"file://{os.path.abspath(parsed.config_dir)}", SearchPathQuery("schema"))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="bigtrain", config_search_path=search_path)
        mode = RunMode.MULTIRUN if parsed.multirun else RunMode.RUN
        try:
            cfg = hydra.compose_config(
                parsed.config_name or "config",
                parsed.overrides,
                run_mode=mode,
                with_log_configuration=False,
                validate_sweep_overrides=False,
            )
        except Exception:
            return False  # a typo or bad group: Hydra and the precheck report it in their own words
        check_config(cfg)
        return True
    finally:
        GlobalHydra.instance().clear()


def _check_sweep_values(overrides: list[str]) -> None:
    """`-m +hydra.callbacks.x._target_=a,b`: every value of a sweep over a name-bearing key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra reports grammar errors itself
    problems: list[str] = []
    for o in parsed:
        key = o.key_or_group
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("_target_", "()") or (leaf == "class" and key.startswith(_LOGGING_SECTIONS)):
            allowed = ALLOWED_TARGETS if leaf == "_target_" else ALLOWED_LOGGING
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            for v in values:
                problems += _refuse(key, v, allowed, "_target_" if leaf == "_target_" else "a logging factory")
    if problems:
        raise ConfigError("; ".join(dict.fromkeys(problems)))


def guard_hydra_composition() -> None:
    """Every config Hydra composes from now on (the primary one, each sweep point's, the compose API's) passes
    check_config before Hydra uses it: the backstop behind check_command_line."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = ConfigLoaderImpl.load_configuration
    if getattr(original, "bigtrain_guarded", False):
        return

    def load_configuration(self, *args, **kwargs):
        cfg = original(self, *args, **kwargs)
        check_config(cfg)
        return cfg

    load_configuration.bigtrain_guarded = True
    ConfigLoaderImpl.load_configuration = load_configuration
