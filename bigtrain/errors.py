"""bigtrain's own error type: anything the user can fix (a config, a path, a file) raises it with one line that
names the bad value and what would be valid. The front door prints it without a traceback and exits non-zero."""

from dataclasses import dataclass


class BigtrainError(Exception):
    """A user-fixable problem, reported as one line."""


class ConfigError(BigtrainError):
    """The composed config breaks a rule (a value out of range, groups that do not go together)."""


class DataError(BigtrainError):
    """The corpus, tokenizer or prepared token files cannot be used."""


@dataclass(frozen=True)
class FailedPoint:
    """What a sweep point returns when bigtrain refused or stopped it (its one `bigtrain: error:` line already
    printed): the sweep callback records the point as failed and the others run on, without Hydra's traceback."""

    error: str  # "ConfigError: optim.lr=-1.0 must be a positive number; ..."
