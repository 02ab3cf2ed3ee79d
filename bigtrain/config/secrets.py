"""Keep secrets out of what bigtrain writes (config.yaml, summary.json, logger configs).

A value is secret when its key looks like one (api_key, token, secret, password, credential) or when it equals
the value of such an environment variable (so `logger.run_name=${oc.env:WANDB_API_KEY}` does not leak either)."""

from __future__ import annotations

import os
import re
from typing import Any

# Names that end in a secret-ish word: WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, db_password (not
# sample_tokens or tokenizer).
SECRET_NAME = re.compile(
    r"(^|[_-])(api[_-]?key|access[_-]?key|key[_-]?id|token|secret|password|passwd|credentials?)$", re.IGNORECASE
)
REDACTED = "***"


def secret_env_values() -> list[str]:
    return [v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6]


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of obj (dicts, lists, scalars) with secret keys and secret values replaced by ***."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_NAME.search(k) and v else redact(v, secrets)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, REDACTED)
    return obj
