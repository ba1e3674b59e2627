"""User-facing errors: one clear line naming the file, record or parameter at fault."""

from __future__ import annotations


class LMError(Exception):
    """A problem with the user's input (file, record, parameter); stages print it as one line and exit 2."""


class ConfigError(LMError):
    """A bad parameter: unknown key, wrong type, unknown preset name."""


class DataError(LMError):
    """A bad data source, record or prepared-data directory."""


class CheckpointError(LMError):
    """A missing, corrupt or incompatible checkpoint."""


class TrainingError(LMError):
    """A run that cannot go on: its loss or gradients became NaN/inf (nothing bad is saved)."""


class RunFolderBusyError(LMError):
    """Another live run writes into the same checkpoint folder."""
