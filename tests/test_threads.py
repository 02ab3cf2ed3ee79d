"""trainer.threads: `auto` makes idle OpenMP threads sleep, a count sets the threads of every rank; a setting
already in the environment wins; a bad value is one validation line."""

from __future__ import annotations

import pytest
import torch

from bigtrain.config.validate import problems_of
from bigtrain.training.threads import apply_threads
from tests.conftest import compose


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_setting_is_one_line_naming_the_valid_ones(value):
    problems = [p for p in problems_of(compose(f"trainer.threads={value}")) if "trainer.threads" in p]
    assert problems == [
        f"trainer.threads={value} is not valid; valid: auto or a positive number of threads per process"
    ]


@pytest.mark.parametrize("value", ["auto", "1", "4"])
def test_good_thread_settings_pass(value):
    assert not [p for p in problems_of(compose(f"trainer.threads={value}")) if "trainer.threads" in p]


def test_auto_makes_idle_openmp_threads_sleep_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    apply_threads("auto")
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    apply_threads("auto")
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_count_sets_every_ranks_threads_and_this_process(monkeypatch):
    import os

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        apply_threads("3")
        assert os.environ["OMP_NUM_THREADS"] == "3"  # what the other ranks inherit
        assert torch.get_num_threads() == 3  # torch was already imported here: set directly
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        apply_threads("5")  # the user's environment wins
        assert os.environ["OMP_NUM_THREADS"] == "2" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
