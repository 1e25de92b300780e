"""The errors DINO-Mix raises for problems a user can fix, one class per kind.

Front ends map them by type, not by message: the MONAI Label app answers each with its HTTP status (see the
app's ``lib/compat/errors.py``), the command line prints the message and exits with 2.
"""

from __future__ import annotations

__all__ = ["InvalidVolumeError", "ModelNotFoundError", "ModelFileError", "TrainingError", "DataFolderError"]


class InvalidVolumeError(ValueError):
    """An image or label that cannot be used (unreadable, wrong dimensionality, grid mismatch, bad ids)."""


class ModelNotFoundError(FileNotFoundError):
    """No trained model at the given path."""


class ModelFileError(ValueError):
    """A file is not a readable DINO-Mix model file."""


class TrainingError(RuntimeError):
    """Training cannot start or go on (no labeled data, incompatible checkpoint, a diverging loss...)."""


class DataFolderError(FileNotFoundError):
    """A benchmark data folder does not have the expected layout or misses case files."""
