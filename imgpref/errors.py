"""The errors that mean "the user's input is wrong" (shown as one line by the CLI, not a traceback).

Defined here, without torch or diffusers, so the CLI can catch them without importing the training code
(a config typo is then reported in a fraction of a second); the modules that raise them import them."""

from __future__ import annotations

from imgpref.config import ConfigError
from imgpref.outdir import OutputDirError


class ModelNotFoundError(FileNotFoundError):
    """A model was named by something that is not a local directory."""


class PairDataError(ValueError):
    """The pair folder has problems; the message lists them by file and line."""


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for too many optimiser steps in a row."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ModelNotFoundError,
    OutputDirError,
    FileNotFoundError,
    PairDataError,
    NonFiniteLossError,
)
