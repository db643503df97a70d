"""Checking the output directory before any work is spent."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputDirError(Exception):
    """The output directory cannot be used; ``str(e) == f"{path}: {problem}"``. CLI exit code 2."""

    exit_code = 2

    def __init__(self, path: Path | str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def check_output_dir(out_dir: Path | str) -> Path:
    """Create ``out_dir`` if needed and prove it is writable; return its absolute path.

    Writability is tested by writing and removing a small probe file (mode
    bits alone lie, e.g. for root or read-only mounts). Raises
    ``OutputDirError`` when the path is not a directory or cannot be written.
    """
    path = Path(out_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise OutputDirError(path, "exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(path, f"cannot create directory ({error.strerror or error})") from error
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write_probe_")
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        raise OutputDirError(path, f"directory is not writable ({error.strerror or error})") from error
    return path
