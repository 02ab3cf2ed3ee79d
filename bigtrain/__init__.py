"""bigtrain: declarative experiment-config training for GPT models."""

__version__ = "0.1.0"
