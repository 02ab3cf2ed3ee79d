"""Fuzz the front door's config path: 600 generated override sets, each composed and validated the way
`python -m bigtrain` does before any heavy work. Every set must end valid or in one BigtrainError line (no other
exception, no hang), and every accepted set must show each of its overrides in the composed config.

The sets are generated from the config groups (every option, plus an unknown one) and the schema (every leaf key,
with values drawn for its type: domain edges, non-finite numbers, wrong types, paths, interpolations), plus unknown
keys and `_target_` anywhere. Composition is Hydra's own: the group choices go through `compose` (cached per
combination, the slow part) and the key overrides through the function Hydra applies them with after composing the
defaults list; a second test holds that shortcut equal to a full `compose` on a sample.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import signal
from pathlib import Path

import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from bigtrain.config import schema as schema_module
from bigtrain.config.cli import CONF_DIR
from bigtrain.config.compose import compose_config, one_line
from bigtrain.config.domains import DOMAINS
from bigtrain.config.validate import validate
from bigtrain.errors import BigtrainError, ConfigError

SETS = 600
# Groups whose choices are run settings (hydra/ holds Hydra's launcher and sweeper plugins).
GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml")) + ["no-such-option"]
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir() and group.name != "hydra"
}


def _leaves(cls, prefix: str = "") -> dict[str, str]:
    """Dotted leaf keys of the schema and their annotation (a string: the schema uses postponed annotations)."""
    out = {}
    for f in dataclasses.fields(cls):
        sub = getattr(schema_module, str(f.type).split(" |")[0], None)
        if dataclasses.is_dataclass(sub):
            out.update(_leaves(sub, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = str(f.type)
    return out


LEAVES = _leaves(schema_module.BigtrainConfig)
UNKNOWN_KEYS = ["+trainer.max_step", "+new.key", "+model.n_layr", "+optim.momentum", "+notes.free", "+notes.deep.er"]
TARGETS = ["+model._target_", "+optim._target_", "+notes.x._target_", "+trainer._target_", "+_target_"]
TARGET_VALUES = ["os.system", "builtins.eval", "torch.optim.AdamW", "bigtrain.model.GPT", "subprocess.Popen"]


def _numbers(key: str) -> list[str]:
    d = DOMAINS.get(key)
    edges = []
    if d is not None:
        for edge in (d.low, d.high):
            if edge is not None:
                edges += [repr(edge), repr(edge * 2 + 1), repr(edge - 1)]
    return edges + ["0", "-1", "1", "7", "0.5", "-0.5", "1e30", "-1e30", "nan", "inf", "-inf", "10**12"]


def _paths(tmp: Path) -> list[str]:
    a_file = tmp / "a-file.txt"
    a_file.write_text("x")
    return ["''", "/", "/proc/nope", str(a_file), str(a_file / "below"), str(tmp / "new-folder"), str(tmp), "."]


WRONG = [
    "abc",
    "''",
    "null",
    "true",
    "[1,2]",
    "{a: 1}",
    "'3'",
    "${trainer.seed}",
    "${nope}",
    "${oc.env:BIGTRAIN_UNSET_X}",
]


def _value(rng: random.Random, key: str, annotation: str, paths: list[str]) -> str:
    if rng.random() < 0.25:
        return rng.choice(WRONG)
    if annotation.startswith(("int", "float")) or key == "optim.betas":
        if key == "optim.betas":
            return f"[{rng.choice(_numbers(key))},{rng.choice(_numbers(key))}]"
        return rng.choice(_numbers(key))
    if annotation.startswith("bool"):
        return rng.choice(["true", "false", "1", "yes"])
    if "path" in key or "dir" in key or key in ("data.source", "ckpt", "init_from", "resume", "prompt_file"):
        return rng.choice(paths)
    return rng.choice(["abc", "a/b", "gloo", "bogus", "stop", "skip", "bf16-mixed", "16-mixed", "x" * 200, "' '"])


def _group_pool(n: int = 32) -> list[list[str]]:
    """n group-choice combinations (each composes in about a second on a loaded 2-core machine: the key overrides
    vary per set, the group part is drawn from this pool); every option of every group appears in one."""
    rng = random.Random(11)
    pool = [[]] + [[f"{g}={choice}"] for g in sorted(GROUPS) for choice in GROUPS[g]]
    while len(pool) < n + len(pool) // 2:
        pool.append([f"{g}={rng.choice(GROUPS[g])}" for g in rng.sample(sorted(GROUPS), 2)])
    return pool


GROUP_POOL = _group_pool()


def random_set(rng: random.Random, paths: list[str]) -> tuple[list[str], list[str]]:
    """(group choices, key overrides)."""
    groups = list(rng.choice(GROUP_POOL))
    if rng.random() < 0.05:
        groups.append(f"model=[{rng.choice(GROUPS['model'])},{rng.choice(GROUPS['model'])}]")
    keys = []
    for key in rng.sample(sorted(LEAVES), rng.randint(0, 4)):
        keys.append(f"{key}={_value(rng, key, LEAVES[key], paths)}")
    if rng.random() < 0.15:
        keys.append(f"{rng.choice(UNKNOWN_KEYS)}={rng.choice(['1', 'abc', 'nan'])}")
    if rng.random() < 0.1:
        keys.append(f"{rng.choice(TARGETS)}={rng.choice(TARGET_VALUES)}")
    rng.shuffle(keys)
    return groups, keys


_BASES: dict[tuple[str, ...], DictConfig | BigtrainError] = {}


def fast_compose(groups: list[str], keys: list[str]) -> DictConfig:
    """compose_config(groups + keys), with the group part cached: Hydra composes the defaults list, sets struct
    mode, then applies the key overrides with ConfigLoaderImpl._apply_overrides_to_config; this does the same."""
    cache_key = tuple(sorted(groups))
    if cache_key not in _BASES:
        try:
            _BASES[cache_key] = compose_config(groups)
        except BigtrainError as e:
            _BASES[cache_key] = e
    base = _BASES[cache_key]
    if isinstance(base, BigtrainError):
        raise base
    cfg = copy.deepcopy(base)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(keys), cfg)
    except Exception as e:  # as compose_config does
        raise ConfigError(one_line(e)) from None
    return cfg


def _same(actual, expected) -> bool:
    if isinstance(actual, (ListConfig, DictConfig)):
        actual = OmegaConf.to_container(actual, resolve=True)
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return actual == expected or (math.isnan(expected) and math.isnan(actual))
    if isinstance(actual, float) and isinstance(expected, str):  # a quoted number in a float field
        try:
            return _same(actual, float(expected))
        except ValueError:
            return False
    if isinstance(actual, bool) and not isinstance(expected, bool) and str(expected).lstrip("-").isdigit():
        return actual == (int(expected) != 0)  # OmegaConf stores an int given to a bool field as its truth value
    if isinstance(actual, bool) and isinstance(expected, str):  # OmegaConf reads yes/no/on/off as YAML does
        return actual == (expected.lower() in ("yes", "true", "on", "y"))
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(_same(a, e) for a, e in zip(actual, expected, strict=True))
    return actual == expected or str(actual) == str(expected)


def _declared_name(group: str, choice: str) -> str | None:
    return (yaml.safe_load((CONF_DIR / group / f"{choice}.yaml").read_text()) or {}).get("name")


def assert_took_effect(cfg: DictConfig, groups: list[str], keys: list[str]) -> None:
    overridden = {o.key_or_group for o in OverridesParser.create().parse_overrides(keys)}
    for override in OverridesParser.create().parse_overrides(groups):
        group, choice = override.key_or_group, override.value()
        if {f"{group}.name", f"{group}.stage"} & overridden:
            continue  # a key override changes what names the chosen option (checked with the keys below)
        if group in ("model", "parallelism", "offload", "hardware", "data", "optim", "logger"):
            assert cfg[group].name == _declared_name(group, choice), (group, choice, cfg[group].name)
        elif group == "zero":
            assert cfg.zero.stage == int(choice)
    parsed = OverridesParser.create().parse_overrides(keys)
    for i, override in enumerate(parsed):
        key = override.key_or_group
        later = [o.key_or_group for o in parsed[i + 1 :]]
        if any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in later):
            continue  # a later override of the same node decides it
        raw = OmegaConf.select(cfg, key, throw_on_missing=False)
        value = override.value()
        if isinstance(value, str) and value.startswith("${"):
            node = (
                cfg._get_node(key)
                if "." not in key
                else OmegaConf.select(cfg, key.rsplit(".", 1)[0])._get_node(key.rsplit(".", 1)[1])
            )
            assert node._value() == value, (key, node._value())
            continue
        assert _same(raw, value), (key, value, raw)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def fuzz(n: int, seed: int, tmp_path: Path) -> dict[str, int]:
    """Compose and validate n generated sets; fail on anything but acceptance-with-effect or one refusal line."""
    rng = random.Random(seed)
    paths = _paths(tmp_path)
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for _ in range(n):
            groups, keys = random_set(rng, paths)
            signal.alarm(10)  # a hang is a failure, not a stuck suite
            try:
                cfg = fast_compose(groups, keys)
                validate(cfg)
            except BigtrainError as e:
                assert str(e) and "\n" not in str(e), (groups, keys, str(e))
                outcomes["refused"] += 1
                continue
            except Hang:
                pytest.fail(f"validation hung on {groups + keys}")
            finally:
                signal.alarm(0)
            assert_took_effect(cfg, groups, keys)
            outcomes["accepted"] += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    # Both outcomes must be common, or the generator tests only one side.
    assert outcomes["accepted"] > n // 10 and outcomes["refused"] > n // 3, outcomes
    return outcomes


def test_fuzzed_override_sets_quick(tmp_path):
    fuzz(150, 2026, tmp_path)


@pytest.mark.slow
def test_fuzzed_override_sets_600(tmp_path):
    """600 more sets (the issue asks for at least 500): about 40 s of CPU, most of it composing the group pool."""
    fuzz(SETS, 1, tmp_path)


def test_fast_compose_matches_hydra_compose(tmp_path):
    """The shortcut above gives what a full compose gives (same config, or both refused), on 20 sets."""
    rng = random.Random(7)
    paths = _paths(tmp_path)
    for _ in range(20):
        groups, keys = random_set(rng, paths)
        results = []
        for fn, args in ((fast_compose, (groups, keys)), (compose_config, (groups + keys,))):
            try:
                results.append(OmegaConf.to_yaml(fn(*args)))
            except BigtrainError:
                results.append("refused")
        assert results[0] == results[1], (groups, keys)


def test_every_numeric_field_has_a_domain():
    """The domain table covers the schema: a new numeric field without a declared range fails here."""
    numeric = {
        key
        for key, annotation in LEAVES.items()
        if annotation.split(" |")[0] in ("int", "float") or annotation.startswith("list[float]")
    }
    missing = numeric - set(DOMAINS) - {"zero.stage"}  # zero.stage is a choice (0-3), checked as one
    assert not missing, f"numeric fields without a domain in bigtrain/config/domains.py: {sorted(missing)}"
    assert not set(DOMAINS) - set(LEAVES), "domains for keys the schema does not have"
