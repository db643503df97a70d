"""report.md and plots from a run's report.json dict.

The pipeline calls one function, :func:`write_run_report`, which never raises.
matplotlib is imported only when plots are made (``reporting.plots``), never at
import of this package; nothing here imports torch.
"""
from automl_pipeline.reporting.markdown import render_report_md, write_report_md, write_run_report

__all__ = ["render_report_md", "write_report_md", "write_run_report", "write_plots"]


def __getattr__(name):  # lazy: importing the package must not import matplotlib
    if name == "write_plots":
        from automl_pipeline.reporting.plots import write_plots

        return write_plots
    raise AttributeError(name)
