"""Secrets stay out of every file a run or a sweep writes (bigtrain/config/secrets.py), and redaction by value no
longer rewrites a path bigtrain reads back (it once turned a prepared_dir containing a secret's value into `***`,
which broke task=generate and the DDP workers that re-read config.yaml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from conftest import NANO, assert_ok, run_bigtrain

from bigtrain.config.secrets import is_secret_name, redact, redact_text, redact_yaml_file

SECRET_NAMES = [
    "WANDB_API_KEY", "HF_TOKEN", "githubToken", "accessToken", "DB_SECRET", "DB_PASSWORD", "DB_PASS", "GITHUB_PAT",
    "NPM_AUTH", "SLACK_WEBHOOK_URL", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "SENTRY_DSN", "db_password",
    "notes.api_token", "+notes.db_password", "GOOGLE_APPLICATION_CREDENTIALS", "openaiApiKey",
]  # fmt: skip
NOT_SECRET_NAMES = [
    "PWD", "OLDPWD", "PATH", "HOME", "XAUTHORITY", "SSH_AUTH_SOCK", "sample_tokens", "max_new_tokens", "tokenizer",
    "tokens_per_s", "n_tokens", "COMPASS", "bypass", "prepared_dir", "n_head", "passes", "pattern", "author",
    "flops_per_token", "hardware_flops_per_token", "bits_per_token", "eos_token", "bos_token", "pad_token",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_values_redacted_in_text_but_not_in_paths_bigtrain_needs(tmp_path):
    secret = "s3cr3t-value-0042"
    existing = tmp_path / f"cache-{secret}"
    existing.mkdir()
    cfg = {
        "data": {"prepared_dir": f"/data/{secret}/prepared", "source": f"/corpora/{secret}.txt"},
        "init_from": f"runs/{secret}/checkpoints/last.ckpt",
        "logger": {"run_name": f"run-{secret}", "tags": [secret], "group": str(existing)},
        "notes": {"db_password": "hunter22", "dsn": "x", "url": "postgres://me:pw-123@db/x", "n": 3, "empty": None},
        "hook": "https://hooks.slack.com/services/T0/B0/abcdef",
        "overrides": ["+notes.api_token=zzz", f"data.prepared_dir=/x/{secret}", f"logger.group={secret}"],
    }
    out = redact(cfg, [secret])
    assert out["data"] == cfg["data"] and out["init_from"] == cfg["init_from"]  # paths it reads back: whole
    assert out["logger"] == {"run_name": "run-***", "tags": ["***"], "group": str(existing)}  # an existing path
    assert out["notes"] == {"db_password": "***", "dsn": "***", "url": "postgres://me:***@db/x", "n": 3, "empty": None}
    assert out["hook"] == "***"
    assert out["overrides"] == ["+notes.api_token=***", f"data.prepared_dir=/x/{secret}", "logger.group=***"]


def test_environment_values_found_by_name(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_PAT", "pat-0123456789")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to replace inside ordinary text
    assert redact_text("run pat-0123456789 abc") == "run *** abc"


def test_hydra_files_rewritten(tmp_path):
    path = tmp_path / "multirun.yaml"
    path.write_text(
        "hydra:\n  overrides:\n    task: ['+notes.db_password=hunter22', optim.lr=0.1]\n"
        "  job:\n    env_set: {HF_TOKEN: abcdefgh}\nlogger:\n  run_name: ${oc.env:HF_TOKEN}\n"
    )
    redact_yaml_file(path)
    data = yaml.safe_load(path.read_text())
    assert data["hydra"]["overrides"]["task"] == ["+notes.db_password=***", "optim.lr=0.1"]
    assert data["hydra"]["job"]["env_set"] == {"HF_TOKEN": "***"}
    assert data["logger"]["run_name"] == "${oc.env:HF_TOKEN}"  # an interpolation names the variable, not its value


def _scan(root: Path, needles: dict[str, str]) -> list[str]:
    """Every byte of every file under root (hidden ones, binary .wandb and .png included)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{what} in {path}" for what, needle in needles.items() if needle.encode() in data]
    return found


@pytest.mark.slow
def test_planted_secrets_are_nowhere_under_run_and_sweep_dirs(tmp_path):
    """A real nano run with logger=wandb (offline) and a 2-point sweep, with secrets in the environment and in the
    overrides, Hydra's own files switched on; then every byte under both directories is searched."""
    token = "tok-9f8e7d6c5b4a3928"  # an environment secret, reached through ${oc.env:...} and typed literally
    literal = "hunter2-literal-77"  # a secret only its key's name gives away
    webhook = "T000/B000/XyZsecretHook"
    path_secret = "pat-in-path-5150"  # an environment secret that happens to be part of the data cache path
    env = {
        "BIGTRAIN_TEST_API_TOKEN": token,
        "DEPLOY_PAT": path_secret,
        "BIGTRAIN_DATA_DIR": str(tmp_path / f"cache-{path_secret}"),
    }
    secrets = [
        "logger=wandb",
        "logger.run_name=${oc.env:BIGTRAIN_TEST_API_TOKEN}",
        f"logger.group=g-{token}",
        f"logger.tags=[{token}]",
        f"+notes.db_password={literal}",
        f"+notes.alerts=https://hooks.slack.com/services/{webhook}",
        f"+hydra.job.env_set.OTHER_TOKEN={token}",
        "hydra.output_subdir=.hydra",
    ]
    run_dir = tmp_path / "run"
    proc = run_bigtrain(*NANO, "trainer.max_steps=4", *secrets, run_dir=run_dir, env=env)
    assert_ok(proc)
    sweep_dir = tmp_path / "sweep"
    sweep = run_bigtrain(
        "-m", *NANO, "trainer.max_steps=2", *secrets, "optim.lr=0.001,0.002", f"hydra.sweep.dir={sweep_dir}", env=env
    )
    assert_ok(sweep)
    assert list(run_dir.rglob("*.wandb")) and len(list(sweep_dir.rglob("*.wandb"))) == 2
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and (sweep_dir / "multirun.yaml").is_file()
    assert (sweep_dir / "0" / "status.json").is_file() and (sweep_dir / "report.json").is_file()
    needles = {"token": token, "literal": literal, "webhook": webhook}
    assert _scan(run_dir, needles) == [] and _scan(sweep_dir, needles) == []
    for p in (proc, sweep):
        assert not [w for w, n in needles.items() if n in p.stdout + p.stderr]
    # The path that holds a secret's value is kept whole, so what reads it back still works.
    prepared = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["prepared_dir"]
    assert path_secret in prepared and os.path.isfile(os.path.join(prepared, "meta.json"))
    gen = run_bigtrain("task=generate", f"ckpt={run_dir}", "prompt=def", run_dir=tmp_path / "gen", env=env)
    assert_ok(gen)
