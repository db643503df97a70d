"""Plots of one run, drawn from its ``report.json`` dict.

Every ``plot_*`` function has the same contract::

    plot_x(report: dict, path: Path) -> Path | None

It writes one PNG at ``path`` and returns the path, or returns ``None``
(writing nothing) when the report lacks the section the plot needs. It may
raise on malformed data; :func:`write_plots` is the caller that turns such a
failure into a logged error, so one bad section never costs the other plots.

matplotlib is switched to the headless ``Agg`` backend when this module is
imported (never at import of the ``reporting`` package). No torch here.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402

from automl_pipeline.reporting.numbers import finite  # noqa: E402

DPI = 110

Plotter = Callable[[dict, Path], "Path | None"]


# --------------------------------------------------------------------------- helpers


def _section(report: dict, key: str) -> dict | None:
    value = report.get(key) if isinstance(report, dict) else None
    return value if isinstance(value, dict) and value else None


def class_names(report: dict, n: int) -> list[str]:
    """The report's class names, padded/truncated to ``n`` (falls back to indices)."""
    names = (_section(report, "data") or {}).get("class_names") or []
    names = [str(x) for x in names][:n]
    return names + [str(i) for i in range(len(names), n)]


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- timeline


def plot_timeline(report: dict, path: Path) -> Path | None:
    """Phases as horizontal bars (planned vs actual) against the time limit."""
    phases = [p for p in report.get("phases") or [] if isinstance(p, dict) and p.get("name")]
    if not phases:
        return None
    limit = finite(report.get("time_limit_s"))
    wall = finite(report.get("wall_s"))

    fig, ax = plt.subplots(figsize=(9, 0.7 * len(phases) + 1.8))
    y = np.arange(len(phases))
    x_max = 0.0
    labelled = {"planned": False, "actual": False}
    for i, p in enumerate(phases):
        start, end, planned = finite(p.get("start_s")), finite(p.get("end_s")), finite(p.get("planned_s"))
        if p.get("skipped"):
            ax.text(0, i, f"  skipped: {p['skipped']}", va="center", fontsize=8, color="0.35")
            continue
        if planned is not None:
            left = start if start is not None else 0.0
            ax.barh(i - 0.18, planned, left=left, height=0.34, color="tab:blue", alpha=0.35,
                    label=None if labelled["planned"] else "planned")
            labelled["planned"] = True
            x_max = max(x_max, left + planned)
        if start is not None:
            stop = end if end is not None else (wall if wall is not None else start)
            ax.barh(i + 0.18, max(stop - start, 0.0), left=start, height=0.34, color="tab:orange",
                    label=None if labelled["actual"] else "actual")
            labelled["actual"] = True
            ax.text(stop, i + 0.18, f" {stop - start:.0f}s", va="center", fontsize=7)
            x_max = max(x_max, stop)
    if limit is not None:
        ax.axvline(limit, color="red", linestyle="--", label=f"time limit {limit:.0f}s")
        x_max = max(x_max, limit)
    if wall is not None:
        ax.axvline(wall, color="0.3", linestyle=":", label=f"wall used {wall:.0f}s")
        x_max = max(x_max, wall)
    ax.set_yticks(y)
    ax.set_yticklabels([str(p["name"]) for p in phases])
    ax.set_ylim(len(phases) - 0.4, -0.6)  # first phase on top
    ax.set_xlim(0, x_max * 1.08 if x_max > 0 else 1.0)
    ax.set_xlabel("seconds since process start")
    ax.set_title("Phases: planned vs actual time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- DARTS


def _alpha_history(darts: dict, cell: str) -> np.ndarray | None:
    """alphas_per_epoch[*][cell] stacked to (epochs, edges, ops), or None."""
    rows = []
    for entry in darts.get("alphas_per_epoch") or []:
        if isinstance(entry, dict) and entry.get(cell) is not None:
            rows.append(np.asarray(entry[cell], dtype=float))
    if not rows or any(r.ndim != 2 or r.shape != rows[0].shape for r in rows):
        return None
    return np.stack(rows)


def _op_names(darts: dict, n_ops: int) -> list[str]:
    ops = [str(o) for o in darts.get("ops") or []]
    if len(ops) != n_ops:
        ops = [f"op{i}" for i in range(n_ops)]
    return ops


def plot_darts_alphas(report: dict, path: Path) -> Path | None:
    """Architecture weights per edge over epochs (one small panel per edge and cell
    type), plus the skip count per epoch against the early-termination limit."""
    darts = _section(report, "darts")
    if darts is None:
        return None
    histories = {c: h for c in ("normal", "reduce") if (h := _alpha_history(darts, c)) is not None}
    skips = [finite(s) for s in darts.get("skip_count_per_epoch") or []]
    if not histories and not skips:
        return None

    ncols = 7
    panel_rows = []  # (cell, edge indices) per row of panels
    for cell, hist in histories.items():
        n_edges = hist.shape[1]
        for r in range(math.ceil(n_edges / ncols)):
            panel_rows.append((cell, list(range(r * ncols, min((r + 1) * ncols, n_edges)))))
    n_rows = len(panel_rows) + (1 if skips else 0)
    fig = plt.figure(figsize=(1.8 * ncols, 1.5 * len(panel_rows) + (2.4 if skips else 0) + 0.9))
    heights = [1.0] * len(panel_rows) + ([1.6] if skips else [])
    grid = fig.add_gridspec(n_rows, ncols, height_ratios=heights, hspace=0.55, wspace=0.12,
                            top=0.9, bottom=0.08)

    colors = plt.get_cmap("tab10").colors
    legend_done = False
    first_ax = None
    for row, (cell, edges) in enumerate(panel_rows):
        hist = histories[cell]
        ops = _op_names(darts, hist.shape[2])
        epochs = np.arange(1, hist.shape[0] + 1)
        for col, e in enumerate(edges):
            ax = fig.add_subplot(grid[row, col], sharex=first_ax, sharey=first_ax)
            first_ax = first_ax or ax
            for k, op in enumerate(ops):
                ax.plot(epochs, hist[:, e, k], color=colors[k % len(colors)], lw=1.2,
                        marker="." if len(epochs) < 4 else None, label=op)
            ax.set_title(f"{cell} edge {e}", fontsize=8, pad=2)
            ax.tick_params(labelsize=6, length=2, pad=1)
            if col > 0:
                ax.tick_params(labelleft=False)
            if not legend_done:
                fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=len(ops), fontsize=8,
                           bbox_to_anchor=(0.5, grid.get_grid_positions(fig)[1][0] + 0.025))
                legend_done = True
    if first_ax is not None:
        first_ax.set_ylim(0, 1)
        first_ax.set_yticks([0, 0.5, 1])
        first_ax.locator_params(axis="x", nbins=4, integer=True)

    if skips:
        ax = fig.add_subplot(grid[n_rows - 1, :])
        limit = finite(darts.get("skip_limit"))
        epochs = np.arange(1, len(skips) + 1)
        values = [np.nan if s is None else s for s in skips]
        ax.plot(epochs, values, marker="o", color="tab:purple", label="edges with dominant skip")
        # with early termination off the limit is more edges than a cell has: no line for it
        n_edges = max((h.shape[1] for h in histories.values()), default=None)
        if limit is not None and (n_edges is None or limit <= n_edges):
            ax.axhline(limit, color="red", linestyle="--", label=f"termination limit ({limit:g})")
        ax.set_xlabel("DARTS epoch")
        ax.set_ylabel("skip count")
        ax.set_xticks(epochs)
        betas = [finite(b) for b in darts.get("beta_per_epoch") or []]
        if betas and any(b is not None for b in betas):
            ax2 = ax.twinx()
            ax2.plot(np.arange(1, len(betas) + 1), [np.nan if b is None else b for b in betas],
                     color="0.5", linestyle=":", label="surrogate skip beta")
            ax2.set_ylabel("beta", fontsize=8)
            ax2.legend(loc="upper right", fontsize=7)
        ax.legend(loc="upper left", fontsize=7)
        reason = darts.get("stop_reason")
        ax.set_title("Skip count per epoch" + (f" (stop: {reason})" if reason else ""), fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("DARTS architecture weights (softmax) per edge over epochs"
                 if panel_rows else "DARTS skip count per epoch", y=0.995)
    return _save(fig, path, tight=False)  # layout is fixed by the grid; "tight" would draw it twice


# --------------------------------------------------------------------------- BOHB


# The clock of bohb.trajectory (and of each trial's t_s): seconds since run_bohb started its search
# (bohb/search.py, after the BOHB phase timed an epoch of the default configuration), not since
# process start like the phases and events.
BOHB_TIME_AXIS = "seconds since the BOHB search started"


def trajectory_points(trajectory: Sequence[Any]) -> list[tuple[float, float]]:
    """(t_s, best val macro-F1 so far) from bohb.trajectory, a list of [t_s, val macro-F1] pairs.

    A pair that is not two finite numbers is skipped; the running best is taken, so the curve is
    monotone.
    """
    points = []
    for entry in trajectory or []:
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            t, score = finite(entry[0]), finite(entry[1])
            if t is not None and score is not None:
                points.append((t, score))
    points.sort()
    best, out = -math.inf, []
    for t, s in points:
        best = max(best, s)
        out.append((t, best))
    return out


def plot_bohb(report: dict, path: Path) -> Path | None:
    """Best val macro-F1 over the search's time (bohb.trajectory: each improvement of the incumbent)."""
    bohb = _section(report, "bohb")
    if bohb is None:
        return None
    traj = trajectory_points(bohb.get("trajectory") or [])
    if not traj:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ts, ss = zip(*traj)
    ax.step(ts, ss, where="post", color="tab:green", lw=1.8)
    ax.plot(ts, ss, "o", color="tab:green", ms=4)
    ax.set_xlabel(BOHB_TIME_AXIS)
    ax.set_ylabel("best val macro-F1")
    n_trials = bohb.get("n_trials")
    ax.set_title("BOHB incumbent over time" + (f" ({n_trials} trials)" if n_trials else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- cell stack


def plot_cell_stack(report: dict, path: Path) -> Path | None:
    """The chosen model's stack (final.architecture.cell_stack): skip edges of the cell at each position,
    coloured by stage, reduction cells hatched, the cell's name under each bar. Whether deeper cells have
    more skips (the poster's finding for BOHB's choices) is read off left to right."""
    arch = (_section(report, "final") or {}).get("architecture")
    stack = arch.get("cell_stack") if isinstance(arch, dict) else None
    if not isinstance(stack, list) or not stack:
        return None
    n = len(stack)
    skips = [finite(c.get("skips")) or 0.0 for c in stack]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(min(max(4.5, 0.9 * n + 2), 12.0), 3.6))
    stages = [int(c.get("stage") or 0) for c in stack]
    for i, (c, v, stage) in enumerate(zip(stack, skips, stages)):
        ax.bar(i, v, color=colours[stage % len(colours)], edgecolor="black", hatch="//" if c.get("reduction") else None)
        ax.text(i, v + 0.05, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(n))
    ax.set_xticklabels([f"{i}{' (red.)' if c.get('reduction') else ''}\n{c.get('cell') or 'shared cell'}"
                        for i, c in enumerate(stack)], fontsize=8)
    ax.set_xlabel("position in the stack (red. = reduction cell, hatched)")
    ax.set_ylabel("skip_connect edges")
    ax.set_ylim(0, max(skips + [1.0]) * 1.25)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Chosen model: cell and skip edges per position")
    ax.legend(handles=[Patch(facecolor=colours[s % len(colours)], edgecolor="black", label=f"stage {s}")
                       for s in sorted(set(stages))], fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- test metrics


def plot_confusion(report: dict, path: Path) -> Path | None:
    """Held-out confusion matrix: colour = row-normalised share, text = count."""
    metrics = _section(report, "test_metrics")
    if metrics is None or not metrics.get("confusion_matrix"):
        return None
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion_matrix is not square: shape {cm.shape}")
    n = cm.shape[0]
    names = class_names(report, n)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(max(4.0, 0.55 * n + 2.5), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8 if n <= 12 else 6,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    f1 = finite(metrics.get("macro_f1"))
    ax.set_title("Held-out test confusion matrix" + (f" (macro-F1 {f1:.3f})" if f1 is not None else ""))
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_f1(report: dict, path: Path) -> Path | None:
    """Held-out per-class F1 as bars, with the macro-F1 as a line; a class without a score (None:
    absent from the held-out test) gets no bar, only the word "absent"."""
    metrics = _section(report, "test_metrics")
    if metrics is None or not metrics.get("per_class_f1"):
        return None
    f1 = np.array([np.nan if finite(x) is None else finite(x) for x in metrics["per_class_f1"]])
    n = len(f1)
    names = class_names(report, n)
    fig, ax = plt.subplots(figsize=(min(max(5.0, 0.5 * n + 2), 18.0), 4))
    scored = np.flatnonzero(~np.isnan(f1))
    ax.bar(scored, f1[scored], color="tab:blue")
    for i, v in enumerate(f1):
        ax.text(i, (0 if np.isnan(v) else v) + 0.01, "absent" if np.isnan(v) else f"{v:.2f}",
                ha="center", va="bottom", fontsize=7)
    macro = finite(metrics.get("macro_f1"))
    if macro is not None:
        ax.axhline(macro, color="red", linestyle="--", label=f"macro-F1 {macro:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("F1")
    ax.set_title("Held-out test F1 per class")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_counts(report: dict, path: Path) -> Path | None:
    """Images per class in each split (grouped bars)."""
    splits = (_section(report, "data") or {}).get("splits")
    if not isinstance(splits, dict):
        return None
    per_split = {name: list(s["per_class"]) for name in ("train", "val", "test")
                 if isinstance(s := splits.get(name), dict) and s.get("per_class")}
    if not per_split:
        return None
    n = max(len(v) for v in per_split.values())
    names = class_names(report, n)
    width = 0.8 / len(per_split)
    fig, ax = plt.subplots(figsize=(min(max(5.5, 0.6 * n + 2), 18.0), 4))
    for k, (split, counts) in enumerate(per_split.items()):
        counts = [(finite(c) or 0.0) for c in counts] + [0.0] * (n - len(counts))
        total = (finite(splits[split].get("count")) or sum(counts))
        ax.bar(np.arange(n) + (k - (len(per_split) - 1) / 2) * width, counts, width=width,
               label=f"{split} ({total:.0f})")
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- all


# name -> plotter; the name is the PNG's stem. Order = order in report.md.
PLOTTERS: dict[str, Plotter] = {
    "timeline": plot_timeline,
    "class_counts": plot_class_counts,
    "darts_alphas": plot_darts_alphas,
    "bohb": plot_bohb,
    "cell_stack": plot_cell_stack,
    "confusion": plot_confusion,
    "per_class_f1": plot_per_class_f1,
}


def _safe_call(log: Callable[[str], Any], message: str) -> None:
    try:
        log(message)
    except Exception:
        pass


def write_plots(report: dict, plots_dir: Path, *, log: Callable[[str], Any] = print,
                errors: list[str] | None = None) -> dict[str, Path]:
    """Make every plot the report has data for; returns ``{name: path}`` of PNGs written.

    Never raises for a plot: a failing plotter is logged via ``log`` (and its
    message appended to ``errors`` when given), its half-written figure is
    closed, and the other plots are still made.
    """
    plots_dir = Path(plots_dir)
    made: dict[str, Path] = {}
    try:
        plots_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors_msg = f"plots not made: cannot create {plots_dir}: {exc}"
        if errors is not None:
            errors.append(errors_msg)
        _safe_call(log, errors_msg)
        return made
    for name, plotter in list(PLOTTERS.items()):
        try:
            out = plotter(report, plots_dir / f"{name}.png")
        except Exception as exc:  # one bad section must not cost the other plots
            plt.close("all")
            msg = f"plot {name!r} failed: {type(exc).__name__}: {exc}"
            if errors is not None:
                errors.append(msg)
            _safe_call(log, msg)
            continue
        if out is not None:
            made[name] = Path(out)
    return made
