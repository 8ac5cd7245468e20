"""The errors that mean "the user's input is wrong" (shown as one line by the CLI, not a traceback)."""

from __future__ import annotations

from imgpref.config import ConfigError
from imgpref.models.base import ModelNotFoundError
from imgpref.outdir import OutputDirError
from imgpref.train.pair_data import PairDataError
from imgpref.train.runtime import NonFiniteLossError

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ModelNotFoundError,
    OutputDirError,
    FileNotFoundError,
    PairDataError,
    NonFiniteLossError,
)
