"""Keep secrets out of what bigtrain writes: config.yaml, summary.json, checkpoints, status.json, sweep reports,
Hydra's multirun.yaml and .hydra/ files, and wandb (config, run name, group, tags, the recorded command line).

A value is secret when
- its key looks like one: `*_API_KEY`, `*_TOKEN`, `*Token`, `*_SECRET`, `*_PASSWORD`, `*_PASS`, `*_PAT`, `*_AUTH`,
  `*_WEBHOOK(_URL)`, `*_CREDENTIALS`, `*_DSN`, ... (also inside an override string: `+notes.db_password=x`);
- it contains the value of an environment variable with such a name (so `logger.run_name=${oc.env:HF_TOKEN}` does
  not leak either), or is a webhook URL, or a URL with a password in it.
Value matching skips the paths bigtrain needs later (a prepared_dir, a checkpoint, a run directory: by key, or
because the string names an existing file or folder): rewriting one breaks the tasks that read it back, and a
name that is already in the file system is not disclosed by writing it down.
"""

from __future__ import annotations

import os
import re
from typing import Any

# The last words of a secret's name (not `pwd`: $PWD is the working directory; not plural `tokens`: counts).
SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|key[_-]?id|token|secret|password|"
    r"passwd|pass|pat|auth|authorization|credentials?|webhook(?:[_-]?url)?|dsn|cookie)$",
    re.IGNORECASE,
)
# ...but a token of a language model is not a credential: flops_per_token, eos_token, max_new_token.
MODEL_TOKEN_NAME = re.compile(
    r"(?:^|[_-])(?:per|bos|eos|pad|unk|sep|cls|mask|start|end|special|first|last|next|new|max|min|num|n)[_-]token$",
    re.IGNORECASE,
)
CAMEL_SECRET_NAME = re.compile(r"[a-z0-9](?:Token|Secret|Password|ApiKey|Auth|Pat|Webhook)$")
WEBHOOK_URL = re.compile(  # Hydra writes an override's `:` as `\:`
    r"https?\\?://(?:hooks\.slack\.com/\S+|discord(?:app)?\.com/api/webhooks/\S+|[\w.-]*webhook[\w.-]*/\S+|"
    r"\S+/webhooks?/\S+)",
    re.IGNORECASE,
)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*\\?://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)
ASSIGNMENT = re.compile(r"^(?P<key>[+~]{0,2}[\w./-]+)=(?P<value>.+)$", re.DOTALL)
# `key=value` inside longer text: a command line, Hydra's override_dirname (`a=1,b=2`), a log line.
INNER_ASSIGNMENT = re.compile(r"(?P<pre>^|[\s,'\"\[(])(?P<key>[+~]{0,2}[A-Za-z_][\w./-]*)=(?P<value>[^\s,'\"\])]*)")
# Config keys whose values are paths bigtrain reads back (never rewritten by value).
PATH_KEYS = frozenset(
    {
        "prepared_dir", "source", "cache_dir", "init_from", "ckpt", "resume", "ckpt_path", "nvme_path",
        "prompt_file", "sweep_dir", "out_dir", "output_dir", "save_dir", "dir", "subdir", "run_dir", "cwd",
        "submitit_folder", "checkpoint", "last_checkpoint", "consolidated", "config_dir",
    }
)  # fmt: skip
REDACTED = "***"
MIN_SECRET_LEN = 8  # shorter environment values are too likely to occur in ordinary text by chance


def is_secret_name(name: str) -> bool:
    leaf = re.split(r"[./]", str(name).lstrip("+~"))[-1]
    if MODEL_TOKEN_NAME.search(leaf):
        return False
    return bool(SECRET_NAME.search(leaf) or CAMEL_SECRET_NAME.search(leaf))


def secret_env_values() -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another is replaced whole


def redact(obj: Any, secrets: list[str] | None = None, key: str | None = None) -> Any:
    """A copy of obj (dicts, lists, scalars) with secret keys and secret values replaced by ***."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact(v, secrets, k)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, secrets, key) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, secrets, path_ok=isinstance(key, str) and key in PATH_KEYS)
    return obj


def redact_text(text: str, secrets: list[str] | None = None, path_ok: bool = False) -> str:
    """Free text (an override, a command line, an error line): secret assignments, webhook URLs, URL passwords
    and known secret values replaced; a path bigtrain needs (path_ok, or an existing file) is left whole."""
    if path_ok or _is_existing_path(text):
        return text
    secrets = secret_env_values() if secrets is None else secrets
    m = ASSIGNMENT.match(text)
    if m and is_secret_name(m.group("key")):
        return f"{m.group('key')}={REDACTED}"
    if m and m.group("key").rsplit(".", 1)[-1] in PATH_KEYS:
        return text  # `data.prepared_dir=/cache/...`: a path bigtrain needs, as an override
    text = INNER_ASSIGNMENT.sub(
        lambda a: f"{a.group('pre')}{a.group('key')}={REDACTED}" if is_secret_name(a.group("key")) else a.group(0),
        text,
    )
    text = WEBHOOK_URL.sub(REDACTED, text)
    text = URL_PASSWORD.sub(lambda u: f"{u.group('scheme')}{u.group('user')}:{REDACTED}@", text)
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


def _is_existing_path(text: str) -> bool:
    if not text or len(text) > 4096 or "\n" in text or "/" not in text:
        return False
    try:
        return os.path.exists(text)
    except (OSError, ValueError):
        return False


def redact_yaml_file(path) -> None:
    """Rewrite a YAML file Hydra wrote (multirun.yaml, .hydra/*.yaml) with its secrets replaced; unchanged files
    are left alone. Interpolations stay unresolved, as Hydra wrote them."""
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(data)
    if clean != data:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(clean)))
        tmp.replace(path)


def redact_log_records() -> None:
    """Every log record of this process (Hydra's launcher prints each sweep point's overrides; wandb copies the
    console into its run files) gets redact_text before any handler sees it."""
    import logging

    make = logging.getLogRecordFactory()
    if getattr(make, "bigtrain_redacts", False):
        return

    def redacted_record(*args, **kwargs):
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error report
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    redacted_record.bigtrain_redacts = True
    logging.setLogRecordFactory(redacted_record)
