"""Compose the config from overrides outside `hydra.main` (tests, the CLI's pre-check, tools), turning Hydra's
and OmegaConf's multi-line composition errors into one-line ConfigErrors."""

from __future__ import annotations

import re

from omegaconf import DictConfig

from bigtrain.config.cli import CONF_DIR, quote_numeric_group_choices
from bigtrain.config.schema import register_configs
from bigtrain.errors import ConfigError


def one_line(error: BaseException) -> str:
    """Hydra's message and its cause, as one line ('Available options' lists included)."""
    parts = [str(error)]
    if error.__cause__ is not None and str(error.__cause__) not in parts[0]:
        parts.append(str(error.__cause__))
    text = " ".join(parts)
    text = re.sub(r"\s*\n\s*", "; ", text.strip())
    text = re.sub(r"(;\s*)+", "; ", text)
    text = re.sub(r"; Config search path:.*$", "", text)
    text = re.sub(r"; (reference_type|object_type)=\w+", "", text)
    text = re.sub(
        r"Available options in '([\w/]+)': (.*)$",
        lambda m: f"valid {m.group(1)} options: {m.group(2).replace('; ', ', ')}",
        text,
    )
    missing = re.search(r"Key '(\w+)' not in '\w+'; full_key: ([\w.]+)", text)
    if missing:
        text += f"; valid keys there: {', '.join(_schema_keys(missing.group(2).rsplit('.', 1)[0] if '.' in missing.group(2) else ''))}"
    return text.replace(":;", ":")


def _schema_keys(path: str) -> list[str]:
    """Field names of the schema node at a dotted path ('' is the root)."""
    from dataclasses import fields, is_dataclass

    from bigtrain.config.schema import BigtrainConfig

    node = BigtrainConfig()
    for part in filter(None, path.split(".")):
        node = getattr(node, part, None)
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def compose_config(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from bigtrain.config.launch_checks import group_list_problems

    register_configs()
    problems = group_list_problems(list(overrides))
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=quote_numeric_group_choices(list(overrides)))
    except Exception as e:  # composition errors come as several Hydra and OmegaConf types
        raise ConfigError(one_line(e)) from None
