"""Tests for automl_pipeline.errors.error_text: the one way a failure becomes a line of text."""
from __future__ import annotations

import pytest

from automl_pipeline.errors import WorkerError, error_text


@pytest.mark.parametrize("exc,text", [
    (ValueError("  bad lr\nsecond line"), "ValueError: bad lr"),
    (RuntimeError(), "RuntimeError: "),
    (WorkerError.from_traceback("Traceback (most recent call last):\n  File x\nKeyError: 'lr'\n"),
     "WorkerError: KeyError: 'lr'"),
    (WorkerError.from_traceback(None), "WorkerError: no result"),
])
def test_error_text_is_type_and_first_line(exc, text):
    assert error_text(exc) == text


def test_error_text_is_cut_at_the_limit():
    assert error_text(ValueError("x" * 1000)) == ("ValueError: " + "x" * 1000)[:300]
    assert len(error_text(ValueError("x" * 1000), limit=500)) == 500


def test_error_text_is_the_text_of_every_failure():
    """A failed phase, a failed trial and a worker that raised all write error_text."""
    from automl_pipeline.bohb.results import TrialRecord
    from automl_pipeline.bohb.worker import TRIAL_ERROR_CHARS
    from automl_pipeline.phases.context import phase_failed

    class Log:
        def event(self, kind, message):
            self.kind, self.message = kind, message

    log, err = Log(), RuntimeError("boom\ntraceback detail")
    assert phase_failed(log, "bohb", err) == f"failed ({error_text(err)})" == "failed (RuntimeError: boom)"
    assert log.kind == "phase_failed" and error_text(err) in log.message
    traceback = "Traceback (most recent call last):\n  File x\nValueError: " + "y" * 600
    record = TrialRecord.from_hpbandster((0, 0, 0), {}, 1.0, None, traceback, t_s=0.0)
    assert record.error == error_text(WorkerError(traceback.splitlines()[-1]), TRIAL_ERROR_CHARS)
    assert record.error.startswith("WorkerError: ValueError: yyy") and len(record.error) == TRIAL_ERROR_CHARS
