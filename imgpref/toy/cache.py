"""Where built toy models live: ``$IMGPREF_CACHE`` or ``~/.cache/imgpref``, keyed by version and size."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that moves the cache.
CACHE_ENV = "IMGPREF_CACHE"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "imgpref").expanduser()


#: Names of the toy model sizes (``imgpref.toy.model.SIZES`` holds their settings); kept here, free of heavy
#: imports, so the command line can list them without importing diffusers.
TOY_SIZES = ("micro", "small")
