"""README's commands cannot rot: every `python -m bigtrain ...` line of its shell code blocks composes and validates
as that task would (in-process, no training), and the `task=prepare ... data.tokenizer=bpe` example runs for real
on a small corpus."""

from __future__ import annotations

import os
import re
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from bigtrain.config.compose import compose_config
from bigtrain.config.launch_checks import check_cli_shape
from bigtrain.config.validate import validate
from tests.conftest import REPO


def readme_commands() -> list[list[str]]:
    """The arguments after `python -m bigtrain` on each line of README's bash/sh code blocks."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():  # a command continued with `\` is one line
            m = re.search(r"python -m bigtrain\b(.*)", line)
            if m:
                # as the shell would expand $HOME (Hydra's grammar has no `~`: the shell must expand paths)
                commands.append([os.path.expandvars(a) for a in shlex.split(m.group(1), comments=True)])
    return commands


COMMANDS = readme_commands()
# Hydra's flags that take the next argument as their value (not an override).
FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
}


def first_point(args: list[str]) -> list[str]:
    """A sweep's first point: `optim.lr=1e-3,3e-3` -> `optim.lr=1e-3` (Hydra's own parser splits the values)."""
    out = []
    for override in OverridesParser.create().parse_overrides(args):
        if override.is_sweep_override():
            first = next(override.sweep_string_iterator())
            out.append(f"{override.input_line.split('=', 1)[0]}={first}")
        else:
            out.append(override.input_line)
    return out


def test_readme_has_commands():
    assert len(COMMANDS) >= 15 and any("task=prepare" in " ".join(c) for c in COMMANDS)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] or "(default)" for c in COMMANDS])
def test_readme_command_composes_and_validates(args, tmp_path):
    check_cli_shape(args)  # flags and a run dir given there, as the front door checks them first
    if "--help" in args:
        return
    overrides = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in FLAGS_WITH_VALUE]
    overrides = first_point([a for a in overrides if not a.lstrip("+~").startswith(("hydra.", "hydra/"))])
    user_recipe = None
    if "--config-dir" in args:  # the user's own config folder: one holding the recipe the command names
        user_recipe = next(a.split("=", 1)[1] for a in overrides if a.startswith("recipe="))
        (tmp_path / "recipe").mkdir()
        (tmp_path / "recipe" / f"{user_recipe}.yaml").write_text("# @package _global_\ntrainer:\n  max_steps: 7\n")
        overrides.append(f"hydra.searchpath=[file://{tmp_path}]")
    cfg = compose_config(overrides)
    if user_recipe:
        assert cfg.trainer.max_steps == 7, "the recipe from the user's config dir did not take effect"
    if not {"--cfg", "-c"} & set(args):  # --cfg only prints the composed config
        validate(cfg, planning=cfg.task == "plan")


def test_readme_prepare_bpe_example_runs(tmp_path):
    """`python -m bigtrain task=prepare data=text data.source=$HOME/my_corpus/ data.tokenizer=bpe`, with the corpus
    folder in a temporary folder: it used to exit 2 (`~` is not in Hydra's grammar; then the default model's
    256-token vocabulary)."""
    (args,) = [c for c in COMMANDS if "task=prepare" in c and "data.tokenizer=bpe" in c]
    corpus = tmp_path / "my_corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc{i}.txt").write_text(f"document {i}: the quick brown fox jumps over the lazy dog. " * 40)
    from bigtrain.tasks import run_task

    args = [a.replace(os.path.expandvars("$HOME/my_corpus/"), f"{corpus}/") for a in args]
    cfg = compose_config([*args, f"data.cache_dir={tmp_path / 'cache'}", "data.bpe_vocab_size=400"])
    info = run_task(cfg, tmp_path / "run")
    assert info["tokenizer"] == "bpe" and info["vocab_size"] > 256 and info["train_tokens"] > 0
