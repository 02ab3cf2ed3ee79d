"""bigtrain's own error type: anything the user can fix (a config, a path, a file) raises it with one line that
names the bad value and what would be valid. The front door prints it without a traceback and exits non-zero."""


class BigtrainError(Exception):
    """A user-fixable problem, reported as one line."""


class ConfigError(BigtrainError):
    """The composed config breaks a rule (a value out of range, groups that do not go together)."""


class DataError(BigtrainError):
    """The corpus, tokenizer or prepared token files cannot be used."""
