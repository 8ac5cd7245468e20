"""Output folders: create, resume or refuse; never silently overwrite; write files atomically.

Every command that writes results takes ``--out DIR``. A marker file records which command made the
folder; a later run of the same command resumes there when that command can resume, and any other
non-empty folder is refused with a message that says what to do.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

#: Marker file naming the command that owns an output folder.
MARKER = ".imgpref-run.json"


class OutputDirError(RuntimeError):
    """An output folder cannot be used without risking what is already in it."""


def prepare_out_dir(path: str | Path, command: str, *, resumable: bool) -> tuple[Path, bool]:
    """Make ``path`` ready for ``command``; return it and whether an earlier run is being resumed.

    - missing, empty, or holding only a marker (a run that failed before writing anything): claimed for
      ``command``;
    - claimed by the same resumable command: resumed;
    - anything else non-empty: :class:`OutputDirError` (nothing is touched).
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {str(out)!r} is a file, not a folder; pass a folder path")
    if out.is_dir() and any(p.name != MARKER for p in out.iterdir()):
        marker = out / MARKER
        owner = json.loads(marker.read_text()).get("command") if marker.is_file() else None
        if owner == command and resumable:
            return out, True
        if owner == command:
            raise OutputDirError(
                f"--out {str(out)!r} already holds the results of an earlier `imgpref {command}` "
                "and this command does not resume; pass a new --out (nothing was overwritten)"
            )
        made_by = f"by `imgpref {owner}`" if owner else "by something other than imgpref"
        raise OutputDirError(
            f"--out {str(out)!r} is not empty and was written {made_by}; pass a new or empty folder "
            "(nothing was overwritten)"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, json.dumps({"command": command, "created": time.time()}) + "\n")
    return out, False


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file so that readers see the old or the new content, never a half-written one."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` beside ``path``, flush it to disk, then rename it into place (readers see the old
    or the new file, never a half-written one; a failed write leaves no temporary file behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
