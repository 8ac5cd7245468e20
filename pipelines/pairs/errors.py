"""The one error type of the pair generator: bad input, reported in one line that names the item."""

from __future__ import annotations


class PairsError(ValueError):
    """A prompt source, manifest, corruption or output folder cannot be used as configured.

    The message names the item (file and line, corruption, prompt, family) and says how to fix it.
    """
