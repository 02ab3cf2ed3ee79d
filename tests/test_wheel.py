"""A wheel carries its configs: build one, install it (not editable) into a fresh virtual environment, and run
`task=plan` and a 5-step train from an empty folder outside the checkout.

The venv reuses this interpreter's packages (--system-site-packages; the wheel goes in with --no-deps), so no
network is needed; the test checks that bigtrain itself is imported from the venv, not from this checkout or an
editable install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "bigtrain", src / "bigtrain", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    # Without the tests' PYTHONPATH: it names the checkout, whose bigtrain.egg-info (left by `pip install -e .`)
    # would make pip find bigtrain "already installed" and skip the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
        check=True,
        env=env,
    )
    (wheel,) = (root / "dist").glob("bigtrain-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # --ignore-installed: into the venv even though the interpreter it extends has bigtrain (editable) too
    install = [*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
    subprocess.run([*install, str(wheel)], check=True, env=env)
    work = root / "empty"  # the user's folder: nothing of the checkout in it
    work.mkdir()
    return python, work, env


def run_installed(installed, *args: str) -> subprocess.CompletedProcess:
    python, work, env = installed
    return subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_installed_package_is_the_wheel(installed):
    proc = run_installed(
        installed, "-c", "import bigtrain, bigtrain.config.cli as c; print(bigtrain.__file__, c.CONF_DIR)"
    )
    assert proc.returncode == 0, proc.stderr
    python = installed[0]
    module_file, conf_dir = proc.stdout.split()
    venv_root = str(python.parent.parent)
    assert module_file.startswith(venv_root) and conf_dir.startswith(venv_root), proc.stdout
    assert not module_file.startswith(str(REPO))


@pytest.mark.slow
def test_plan_and_a_short_train_run_from_an_empty_folder(installed):
    plan = run_installed(installed, "-m", "bigtrain", "task=plan", "recipe=gpt3-175b-a100")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "memory per device" in plan.stdout
    work = installed[1]
    train = run_installed(
        installed,
        "-m",
        "bigtrain",
        "model=nano",
        "trainer.max_steps=5",
        "trainer.val_check_interval=5",
        "trainer.val_batches=1",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=4",
        "trainer.progress=false",
        "trainer.sample_tokens=8",
        "data.max_bytes=300000",
        f"hydra.run.dir={work / 'run'}",
    )
    assert train.returncode == 0, train.stderr[-4000:]
    summary = (work / "run" / "summary.json").read_text()
    assert '"steps": 5' in summary
