"""Errors the user can fix by changing the input (data folder, settings).

`InputError` is the one exception the CLI turns into a clean message and exit
code 2 instead of a traceback.  Its text always starts with the offending path.
"""
from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """Bad input: `str(e) == f"{path}: {problem}"`; the CLI exits with `exit_code`."""

    exit_code = 2

    def __init__(self, path: str | PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        # args = (path, problem) keeps the exception picklable (re-raised across processes).
        super().__init__(self.path, problem)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
