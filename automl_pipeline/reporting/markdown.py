"""The human report, ``OUT/report.md``, written from the ``report.json`` dict.

Headline first (held-out macro-F1, accuracy, balanced accuracy, wall used /
limit, status), then the chosen model in words, then one section per report
section that is present. Sections that are missing are skipped; only plot
files that exist are linked. No torch, no matplotlib import here (plots are
made by :mod:`automl_pipeline.reporting.plots`, imported lazily).
"""
from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Callable

from automl_pipeline.reporting.numbers import finite
from automl_pipeline.search_options import SearchOptions
from submission import atomic_write_bytes

PLOT_CAPTIONS = {
    "timeline": "Phases: planned vs actual time against the limit",
    "class_counts": "Images per class and split",
    "darts_alphas": "DARTS architecture weights per edge and skip count per epoch",
    "bohb": "BOHB: best validation macro-F1 over the time since its search started",
    "cell_stack": "Chosen model: cell and skip edges per position of the stack",
    "confusion": "Held-out test confusion matrix",
    "per_class_f1": "Held-out test F1 per class",
}
MAX_EVENTS = 60


# --------------------------------------------------------------------------- formatting helpers


def _f(value: Any, digits: int = 3) -> str:
    x = finite(value)
    return "n/a" if x is None else f"{x:.{digits}f}"


def _s(value: Any, digits: int = 1) -> str:
    """Seconds."""
    x = finite(value)
    return "n/a" if x is None else f"{x:.{digits}f} s"


def _cell(value: Any) -> str:
    """Text safe inside a markdown table cell."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _line(value: Any) -> str:
    """Text on one markdown line (outside tables)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _dict(report: dict, key: str) -> dict | None:
    value = report.get(key)
    return value if isinstance(value, dict) and value else None


def _class_names(report: dict, n: int) -> list[str]:
    names = [str(x) for x in ((_dict(report, "data") or {}).get("class_names") or [])][:n]
    return names + [str(i) for i in range(len(names), n)]


# --------------------------------------------------------------------------- sections


def _headline(report: dict) -> list[str]:
    lines = ["# AutoML run report", ""]
    m = _dict(report, "test_metrics")
    if m is not None:
        lines.append(f"**Held-out test macro-F1: {_f(m.get('macro_f1'))}** · accuracy {_f(m.get('accuracy'))} · "
                     f"balanced accuracy {_f(m.get('balanced_accuracy'))}")
    else:
        lines.append("**No held-out test metrics** were recorded for this run.")
    wall, limit = finite(report.get("wall_s")), finite(report.get("time_limit_s"))
    used = f"{_s(wall)} of a {_s(limit, 0)} limit" if limit is not None else _s(wall)
    if wall is not None and limit:
        used += f" ({100 * wall / limit:.0f} %)"
    lines += ["", f"Wall time used: {used} · status: **{report.get('status', 'unknown')}**", ""]
    splits = ((_dict(report, "data") or {}).get("splits") or {})
    test = splits.get("test") if isinstance(splits, dict) else None
    if isinstance(test, dict) and test.get("count") is not None:
        src = (_dict(report, "data") or {}).get("heldout_source")
        lines.append(f"Held-out test images: {test['count']}" + (f" ({src})" if src else "")
                     + "; touched once, by the final model.")
    return lines + [""] + _search_options(report)


def _search_options(report: dict) -> list[str]:
    """One line: the --search-config options that differ from the full method."""
    search = (_dict(report, "settings") or {}).get("search")
    if not isinstance(search, dict):
        return []
    try:
        changed = SearchOptions.from_json(search).changed()
    except (ValueError, TypeError):
        return [f"Search options: {_line(json.dumps(search, sort_keys=True))}", ""]
    words = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(changed.items())) or "the full method (defaults)"
    return [f"Search options: {words}", ""]


def _node_words(pairs: list) -> list[str]:
    """[[op, input], ...] two per node -> one line per node."""
    out = []
    for node, start in enumerate(range(0, len(pairs), 2)):
        parts = []
        for pair in pairs[start:start + 2]:
            if isinstance(pair, (list, tuple)) and len(pair) >= 2:
                parts.append(f"`{pair[0]}`(state {pair[1]})")
            else:
                parts.append(f"`{pair}`")
        out.append(f"node {node + 2} = " + " + ".join(parts))
    return out


def describe_architecture(arch: dict) -> list[str]:
    """A NetworkSpec JSON in words (markdown lines)."""
    lines = []
    side, ch = arch.get("image_side"), arch.get("in_channels")
    size = f"{side}×{side}×{ch}" if side is not None and ch is not None else "the working resolution"
    lines.append(f"A stack of **{arch.get('n_cells', '?')} cells** on {size} inputs, "
                 f"{arch.get('base_channels', '?')} base channels growing with depth, global pooling, "
                 f"a linear head, {arch.get('n_classes', '?')} outputs.")
    stages = arch.get("stage_genotypes")
    names = arch.get("stage_cells") or []
    stack = arch.get("cell_stack")
    if isinstance(stages, list) and stages:
        used = sorted({c.get("stage") for c in stack if isinstance(c, dict)}) if isinstance(stack, list) else []
        cells = [(f"stage {s}" + (f" (`{names[s]}`)" if s < len(names) else ""), stages[s])
                 for s in used or range(len(stages)) if isinstance(s, int) and 0 <= s < len(stages)]
    else:
        cells = [("", arch.get("genotype"))]
    cell_lines = []
    for label, genotype in cells:
        if not isinstance(genotype, dict):
            continue
        for kind in ("normal", "reduce"):
            pairs = genotype.get(kind)
            if not isinstance(pairs, list):
                continue
            concat = genotype.get(f"{kind}_concat")
            cell_lines.append(f"- **{(label + ' ') if label else ''}{kind} cell**: " + "; ".join(_node_words(pairs))
                              + (f"; output = concat of states {list(concat)}" if concat else ""))
    if cell_lines:
        lines += ["", "Cells (DARTS convention: states 0 and 1 are the cell's inputs, the outputs of the two "
                  "previous cells; state k ≥ 2 is intermediate node k; node inputs are summed):", ""] + cell_lines
    if isinstance(stack, list) and stack:
        lines += ["", "Cell stack (stage s starts at the s-th reduction cell; skips = skip_connect edges of the "
                  "cell built at that position):", ""]
        lines += _table(["position", "stage", "kind", "cell", "skips"],
                        [[c.get("position"), c.get("stage"), "reduction" if c.get("reduction") else "normal",
                          c.get("cell") or "(one cell for all)", c.get("skips")]
                         for c in stack if isinstance(c, dict)])
    return lines


def _final(report: dict, links: list[str]) -> list[str]:
    final = _dict(report, "final")
    if final is None:
        return []
    lines = ["## Chosen model", ""]
    source, description = final.get("source"), final.get("description")
    if description and description != source:
        facts = [f"**{_line(description)}**" + (f" (source `{_line(source)}`)" if source else "")]
    else:
        facts = [f"source: **{_line(source or 'unknown')}**"]
    if final.get("epochs") is not None:
        facts.append(f"trained {final['epochs']} epochs")
    if final.get("train_s") is not None:
        facts.append(f"in {_s(final['train_s'])}")
    if final.get("val_macro_f1") is not None:
        facts.append(f"validation macro-F1 {_f(final['val_macro_f1'])}")
    lines += ["; ".join(facts) + ".", ""]
    arch = final.get("architecture")
    if isinstance(arch, dict) and arch.get("kind") == "ensemble":
        lines += ["An ensemble: its members and weights are in the Ensemble section.", ""]
    elif isinstance(arch, dict) and arch.get("kind") == "bag" and arch.get("members"):
        bagging = _dict(report, "bagging") or {}
        bags = [b for b in bagging.get("bags") or [] if isinstance(b, dict)]
        this = next((b for b in bags if b.get("name") == description), {})
        lines += [f"A bag of {arch.get('models')} models of the architecture below ({bagging.get('folds')} folds, "
                  f"{this.get('rounds', bagging.get('repeats'))} round(s)), each trained on all but one fold of the "
                  f"training and validation images, their probabilities averaged; out-of-fold macro-F1 "
                  f"{_f(this.get('oof_macro_f1', bagging.get('oof_macro_f1')))} ({_line(bagging.get('reason', ''))}).",
                  ""]
        if len(bags) > 1:
            ranked = sorted(bags, key=lambda b: -(b.get("oof_macro_f1") or 0.0))
            lines += ["Bags on the same folds, by out-of-fold macro-F1 over every pooled image: "
                      + "; ".join(f"{_line(b.get('name'))} {_f(b.get('oof_macro_f1'))}" for b in ranked)
                      + f" ({_line(bagging.get('rounds_note', ''))}).", ""]
        member = arch["members"][0].get("architecture") if isinstance(arch["members"][0], dict) else None
        lines += (describe_architecture(member) + [""] + links) if isinstance(member, dict) else []
    elif isinstance(arch, dict) and arch.get("kind") == "logistic_regression":
        lines += [f"A logistic regression on the {arch.get('in_features')} pixel values.", ""]
    elif isinstance(arch, dict) and arch:
        lines += describe_architecture(arch) + [""] + links
    else:
        lines += ["No network architecture (not a trained network).", ""]
    config = final.get("config")
    if isinstance(config, dict) and config:
        lines += ["Configuration:", ""]
        lines += _table(["setting", "value"], [[k, v] for k, v in config.items()])
    return lines


def _data(report: dict, links: list[str]) -> list[str]:
    data = _dict(report, "data")
    if data is None:
        return []
    lines = ["## Data", ""]
    n = data.get("n_classes")
    facts = [f"format: **{data.get('format', 'unknown')}**"]
    if data.get("source"):
        facts.append(f"source: `{data['source']}`")
    if n is not None:
        facts.append(f"{n} classes")
    if data.get("image_size") is not None:
        facts.append(f"working image size {data['image_size']}")
    if data.get("native_side") is not None:
        facts.append(f"native side {data['native_side']} px")
    lines += ["- " + "\n- ".join(facts), ""]
    names = data.get("class_names") or []
    if names:
        shown = ", ".join(str(x) for x in names[:50]) + (f", … ({len(names)} in all)" if len(names) > 50 else "")
        lines += [f"Classes: {shown}", ""]
    splits = data.get("splits")
    if isinstance(splits, dict):
        present = [s for s in ("train", "val", "test") if isinstance(splits.get(s), dict)]
        if present:
            lines += _table(["split", "images"], [[s, splits[s].get("count", "n/a")] for s in present])
            per = {s: splits[s].get("per_class") for s in present if splits[s].get("per_class")}
            if per:
                k = max(len(v) for v in per.values())
                if k <= 50:
                    cls = _class_names(report, k)
                    rows = [[cls[i]] + [(per[s][i] if i < len(per[s]) else "") for s in per] for i in range(k)]
                    lines += _table(["class"] + list(per), rows)
    train_only = data.get("train_only_classes") or []
    if train_only:
        lines += [f"Kept in training only (1 image, nothing carved from them): "
                  f"{_line(', '.join(str(x) for x in train_only))}.", ""]
    notes = data.get("notes") or []
    if notes:
        lines += ["Notes:", ""] + [f"- {_line(n)}" for n in notes] + [""]
    return lines + links


def _phases(report: dict, links: list[str]) -> list[str]:
    phases = [p for p in report.get("phases") or [] if isinstance(p, dict)]
    if not phases:
        return []
    rows = []
    for p in phases:
        start, end = finite(p.get("start_s")), finite(p.get("end_s"))
        used = _s(end - start) if start is not None and end is not None else "n/a"
        note = f"skipped: {p['skipped']}" if p.get("skipped") else ""
        rows.append([p.get("name", "?"), _s(p.get("planned_s")), _s(start), _s(end), used, note])
    plan = _dict(report, "plan")
    said = [f"Plan: {_line(plan['reason'])}.", ""] if plan and plan.get("reason") else []
    first = _dict(report, "first_network")
    if first and first.get("reason"):
        said = [f"First network not trained: {_line(first['reason'])}.", ""] + said
    return ["## Phases", ""] + said + _table(["phase", "planned", "start", "end", "used", "note"], rows) + links


def _ensemble(report: dict) -> list[str]:
    section = _dict(report, "ensemble")
    if section is None:
        return []
    lines = ["## Ensemble", ""]
    if section.get("members"):
        lines += _table(["member", "weight", "validation macro-F1"],
                        [[m.get("name"), _f(m.get("weight")), _f(m.get("val_macro_f1"))] for m in section["members"]])
        lines += [f"Logit adjustment tau {section.get('tau')}; validation macro-F1: ensemble "
                  f"{_f(section.get('val_macro_f1'))}, best single model {_f(section.get('best_single_val_macro_f1'))}. "
                  + ("Delivered." if section.get("delivered") else f"Not delivered: {_line(section.get('reason'))}."), ""]
    elif section.get("reason"):
        lines += [f"Not delivered: {_line(section['reason'])}.", ""]
    evidence = _dict(report, "evidence")
    if evidence and evidence.get("status") == "completed" and evidence.get("reason"):
        lines += [f"Against the k-fold bag: {_line(evidence['reason'])}.", ""]
    heldout = section.get("heldout_macro_f1")
    if isinstance(heldout, dict) and heldout:
        lines += ["Held-out test macro-F1, side by side (the choice was made on validation only):", ""]
        lines += _table(["model", "held-out macro-F1"], [[name, _f(value)] for name, value in heldout.items()])
    candidates = _dict(report, "candidates")
    if candidates and candidates.get("models"):
        rho = candidates.get("val_heldout_spearman")
        lines += [f"What the validation split can tell: over the {len(candidates['models'])} candidates, the Spearman "
                  f"rank correlation between validation and held-out macro-F1 is "
                  f"{'n/a' if rho is None else f'{rho:.2f}'} (report.json `candidates`).", ""]
    return lines


def _not_run(section: dict) -> list[str]:
    """The lines for a search section whose `status` says it did not run ("skipped"), else []."""
    status = section.get("status")
    if status == "completed":
        return []
    reason = section.get("reason")
    return [f"**{str(status).capitalize()}**" + (f": {_line(reason)}" if reason else "") + ".", ""]


def _darts(report: dict, links: list[str]) -> list[str]:
    darts = _dict(report, "darts")
    if darts is None:
        return []
    lines = ["## DARTS search", ""]
    not_run = _not_run(darts)
    if not_run:
        return lines + not_run
    run, planned = darts.get("epochs_run"), darts.get("epochs_planned")
    text = f"Epochs run: **{run if run is not None else 'n/a'}** of {planned if planned is not None else 'n/a'} planned"
    if darts.get("stopped_early"):
        text += " — stopped early"
    if darts.get("stop_reason"):
        text += f" (reason: {darts['stop_reason']})"
    if darts.get("seconds") is not None:
        text += f"; {_s(darts['seconds'])}"
    if darts.get("arch_steps") is not None:
        text += f"; {darts['arch_steps']} architecture steps"
    lines += [text + ".", ""]
    if darts.get("learned") is False:
        lines += ["Its cell was not used" + (f": {_line(darts['reason'])}" if darts.get("reason") else "") + ".", ""]
    elif darts.get("cell_used") is not None:
        lines += ["The delivered model " + ("uses" if darts["cell_used"] else "does not use")
                  + " a cell from this search.", ""]
    skips = darts.get("skip_count_per_epoch") or []
    if skips:
        search = _dict(_dict(report, "settings") or {}, "search") or {}
        stop = (f"termination when above {darts.get('skip_limit')}" if search.get("early_termination", True)
                else "early termination off")
        lines += ["Skip count per epoch (edges whose skip weight exceeds the threshold"
                  + (f" {darts['skip_threshold']}" if darts.get("skip_threshold") is not None else "")
                  + f"; {stop}): {', '.join(str(s) for s in skips)}", ""]
    genotype = darts.get("genotype")
    if isinstance(genotype, dict):
        lines += ["Derived genotype:", ""]
        for cell in ("normal", "reduce"):
            if isinstance(genotype.get(cell), list):
                lines.append(f"- **{cell}**: " + "; ".join(_node_words(genotype[cell])))
        lines.append("")
    return lines + links


def _bohb(report: dict, links: list[str]) -> list[str]:
    bohb = _dict(report, "bohb")
    if bohb is None:
        return []
    lines = ["## BOHB search", ""]
    not_run = _not_run(bohb)
    if not_run:
        return lines + not_run
    n_trials = bohb.get("n_trials")
    facts = [f"{n_trials} trials"]
    if bohb.get("failed_trials"):
        facts.append(f"{bohb['failed_trials']} failed (counted as loss 1)")
    budgets = bohb.get("budgets") or []
    if budgets:
        facts.append("budgets (epochs): " + ", ".join(f"{finite(b):g}" if finite(b) is not None else str(b)
                                                      for b in budgets))
    if bohb.get("seconds") is not None:
        facts.append(_s(bohb["seconds"]))
    lines += ["; ".join(facts) + ".", ""]

    inc = bohb.get("incumbent")
    if isinstance(inc, dict):
        budget = inc.get("budget")
        lines += [f"Incumbent: validation macro-F1 **{_f(inc.get('val_macro_f1'))}** at budget "
                  f"{budget if budget is not None else 'n/a'}.", ""]
        if isinstance(inc.get("config"), dict) and inc["config"]:
            lines += _table(["hyperparameter", "value"], [[k, v] for k, v in inc["config"].items()])

    picks = bohb.get("model_based_picks")
    if bohb.get("optimizer") == "random":
        lines += [f"Random search (search option `optimizer: random`): the {n_trials} trials' configurations "
                  "were sampled uniformly, with BOHB's brackets and budgets; no model-based picks are expected.", ""]
    elif bohb.get("warning"):
        lines += [f"> **Warning:** {_line(bohb['warning'])}: this search behaved like Hyperband (random "
                  "search with successive halving).", ""]
    elif picks is not None and n_trials:
        lines += [f"Model-based picks: {picks} of {bohb.get('configs_sampled', n_trials)} configurations.", ""]
    rows = [[f"{finite(r['budgets'][0]):g} -> {finite(r['budgets'][1]):g}", r["n_configs"],
             "n/a" if r["spearman"] is None else f"{r['spearman']:.2f}"] for r in bohb.get("rung_rank_correlation") or []]
    if rows:
        lines += ["Do adjacent rungs rank alike? Spearman correlation of validation macro-F1 over the configurations "
                  "trained on both:", ""] + _table(["budgets (epochs)", "configurations", "Spearman"], rows)
    if bohb.get("raised_min_budget_reason"):
        lines += [f"The search raised its smallest budget: {_line(bohb['raised_min_budget_reason'])}.", ""]
    if bohb.get("rank_warning"):
        lines += [f"> **Warning:** {_line(bohb['rank_warning'])}.", ""]
    return lines + links


def _per_class(report: dict, links: list[str]) -> list[str]:
    m = _dict(report, "test_metrics")
    if m is None:
        return []
    f1 = m.get("per_class_f1") or []
    lines = ["## Held-out test results per class", ""]
    if f1:
        names = _class_names(report, len(f1))
        test = (((_dict(report, "data") or {}).get("splits") or {}).get("test") or {})
        support = test.get("per_class") if isinstance(test, dict) else None
        rows = []
        for i, v in enumerate(f1):
            row = [names[i], "absent" if v is None else _f(v)]
            if support:
                row.append(support[i] if i < len(support) else "")
            rows.append(row)
        lines += _table(["class", "F1"] + (["test images"] if support else []), rows)
        if any(v is None for v in f1):
            lines += ["A class with no held-out test image has no score (\"absent\"); the macro-F1 is the mean "
                      "over the classes present in the held-out test.", ""]
    if not f1 and not links:
        return []
    return lines + links


def _environment(report: dict) -> list[str]:
    env = _dict(report, "environment")
    settings = _dict(report, "settings")
    if env is None and settings is None:
        return []
    lines = ["## Environment and settings", ""]
    if env:
        lines += ["- " + "\n- ".join(f"{k}: {_line(v)}" for k, v in env.items()), ""]
    if settings:
        lines += ["```json", json.dumps(settings, indent=2, sort_keys=True, default=str), "```", ""]
    return lines


def _events(report: dict) -> list[str]:
    events = [e for e in report.get("events") or [] if isinstance(e, dict)]
    if not events:
        return []
    rows = [[_s(e.get("t_s")), e.get("kind", ""), e.get("message", "")] for e in events[:MAX_EVENTS]]
    lines = ["## Events", ""] + _table(["time", "kind", "message"], rows)
    if len(events) > MAX_EVENTS:
        lines += [f"… and {len(events) - MAX_EVENTS} more in report.json.", ""]
    return lines


# --------------------------------------------------------------------------- entry points


def _plot_links(out_dir: Path, plots: dict[str, str | Path], names: tuple[str, ...]) -> list[str]:
    lines = []
    for name in names:
        rel = plots.get(name)
        if rel is None:
            continue
        rel_path = Path(rel)
        if rel_path.is_absolute():
            try:
                rel_path = rel_path.relative_to(out_dir)
            except ValueError:
                continue  # outside OUT/: a link would not travel with the report
        if not (out_dir / rel_path).is_file():
            continue
        lines += [f"![{PLOT_CAPTIONS.get(name, name)}]({rel_path.as_posix()})", ""]
    return lines


def render_report_md(report: dict, out_dir: Path, plots: dict[str, str | Path] | None = None) -> str:
    """The report.md text. ``plots`` maps plot names to paths relative to ``out_dir``."""
    out_dir = Path(out_dir)
    plots = plots or {}
    link = lambda *names: _plot_links(out_dir, plots, names)  # noqa: E731
    lines: list[str] = []
    lines += _headline(report)
    lines += _final(report, link("cell_stack"))
    lines += _data(report, link("class_counts"))
    lines += _phases(report, link("timeline"))
    lines += _darts(report, link("darts_alphas"))
    lines += _bohb(report, link("bohb"))
    lines += _ensemble(report)
    lines += _per_class(report, link("per_class_f1", "confusion"))
    lines += _environment(report)
    lines += _events(report)
    known = set(PLOT_CAPTIONS)
    extra = link(*[n for n in plots if n not in known])
    if extra:
        lines += ["## Other plots", ""] + extra
    return "\n".join(lines).rstrip() + "\n"


def write_report_md(report: dict, out_dir: Path, plots: dict[str, str | Path] | None = None) -> Path:
    """Write OUT/report.md (atomically) and return its path. May raise on I/O errors."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    atomic_write_bytes(path, render_report_md(report, out_dir, plots).encode("utf-8"))
    return path


def _make_plots(report: dict, out_dir: Path, log: Callable[[str], Any]) -> dict[str, str]:
    """Every plot that can be made, as links relative to out_dir; {} when plotting fails."""
    try:
        from automl_pipeline.reporting.plots import write_plots

        made = write_plots(report, out_dir / "plots", log=log)
        return {name: Path(p).relative_to(out_dir).as_posix() for name, p in made.items()}
    except Exception as exc:
        _safe_log(log, f"report plots failed: {type(exc).__name__}: {exc}")
        return {}


def _safe_log(log: Callable[[str], Any], message: str) -> None:
    try:
        log(message)
    except Exception:
        pass


def write_run_report(report: dict, out_dir: Path, log: Callable[[str], Any] = print, *,
                     plots: bool = True) -> Path | None:
    """The one call the pipeline makes: plots under OUT/plots (unless `plots` is False, for runs
    with no time left to draw them), then OUT/report.md.

    Never raises: a failure in plotting is logged and report.md is still written
    without plots; a failure writing report.md is logged and None is returned.
    """
    out_dir = Path(out_dir)
    links = _make_plots(report, out_dir, log) if plots else {}
    try:
        return write_report_md(report, out_dir, links)
    except Exception as exc:
        _safe_log(log, f"report.md with plots failed: {type(exc).__name__}: {exc}")
    try:
        return write_report_md(report, out_dir, {})
    except Exception as exc:
        _safe_log(log, f"report.md failed: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
        return None
