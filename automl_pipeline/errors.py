"""Errors the user can fix by changing the input (data folder, settings), and the one-line text of any error.

`InputError` is the one exception the CLI turns into a clean message and exit
code 2 instead of a traceback.  Its text always starts with the offending path.
`error_text` is how a failure is written into the log and the report (a failed phase, a failed trial).
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


class WorkerError(Exception):
    """A BOHB worker raised and only its traceback text came back; the message is the traceback's last line."""

    @classmethod
    def from_traceback(cls, text: str | None) -> "WorkerError":
        lines = (text or "").strip().splitlines()
        return cls(lines[-1] if lines else "no result")


def error_text(exc: BaseException, limit: int = 300) -> str:
    """"Type: first line of the message", at most `limit` characters (the message may be empty)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:limit]
