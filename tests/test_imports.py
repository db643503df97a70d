"""The import rules of docs/ARCHITECTURE.md ("Import rules"), checked on the source: run.py and every module
under automl_pipeline/, budget/ and submission/ is parsed (ast, nothing is imported) and each import of a project
module must be allowed by the rule of the importing module.

RULES mirrors the doc: rule key -> the project modules or packages it may import. A module's rule is the
longest key equal to it or to one of its packages (EXACT keys: equal only); imports inside that key's own
package or module are always allowed. A new module inside a package with a rule falls under it; a new
module of automl_pipeline/ or of phases/ needs a rule of its own (test_every_module_has_a_rule). Adding a
module: add its key here and its line in the doc.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("automl_pipeline", "budget", "submission")

AP = "automl_pipeline"
# what every phase module may use (a phase module never imports another one but those listed for it)
PHASE_DEPS = {"budget", "submission"} | {f"{AP}.{m}" for m in (
    "bohb", "checkpoints", "darts", "delivery", "errors", "runlog", "search_options", "search_space", "settings",
    "training")}
RULES: dict[str, set[str]] = {
    # budget/: the clock, the plan and the reserves; nothing from this project, no torch (FORBIDDEN_LIBRARIES)
    "budget": set(),
    "budget.reserves": set(),                        # every safety reserve; imports nothing
    "budget.plan": {"budget.reserves"},              # the run's plan: a pure function of measured facts
    # submission/: writes what the competition reads
    "submission": set(),
    # the leaves
    f"{AP}.errors": set(),
    f"{AP}.search_options": set(),
    f"{AP}.runlog": set(),
    f"{AP}.processes": set(),
    f"{AP}.settings": {f"{AP}.search_options", "budget.reserves"},
    f"{AP}.search_space": {"budget.reserves"},
    f"{AP}.training": {"budget.reserves"},
    f"{AP}.ensemble": {f"{AP}.training.metrics"},   # pure functions of probabilities and labels
    f"{AP}.data": {f"{AP}.errors"},
    f"{AP}.darts": {f"{AP}.training", f"{AP}.search_space"},
    f"{AP}.delivery": {f"{AP}.training", "submission"},
    f"{AP}.checkpoints": {f"{AP}.delivery", f"{AP}.errors", f"{AP}.search_options", "submission"},
    # bohb/: remote workers load their own data (data) and DARTS cells (darts)
    f"{AP}.bohb": {f"{AP}.{m}" for m in ("darts", "data", "training", "search_space", "search_options",
                                         "errors")} | {"submission", "budget.reserves"},
    f"{AP}.reporting": {f"{AP}.search_options", "submission"},
    f"{AP}.compare": {f"{AP}.processes", f"{AP}.reporting", "submission", "budget.reserves"},
    # phases/: common <- context <- the phase modules; bagging (the fold models) and the ensemble step serve the final fit
    f"{AP}.phases": set(),                           # the package's __init__ (see EXACT)
    f"{AP}.phases.common": PHASE_DEPS,
    f"{AP}.phases.context": PHASE_DEPS | {f"{AP}.phases.common"},
    f"{AP}.phases.ensemble": PHASE_DEPS | {f"{AP}.ensemble", f"{AP}.phases.common", f"{AP}.phases.context"},
    f"{AP}.phases.first_model": PHASE_DEPS | {f"{AP}.phases.common", f"{AP}.phases.context"},
    f"{AP}.phases.architecture": PHASE_DEPS | {f"{AP}.phases.common", f"{AP}.phases.context"},
    f"{AP}.phases.hyperparameters": PHASE_DEPS | {f"{AP}.phases.common", f"{AP}.phases.context"},
    f"{AP}.phases.bagging": PHASE_DEPS | {f"{AP}.ensemble", f"{AP}.phases.common", f"{AP}.phases.ensemble"},
    f"{AP}.phases.evidence": PHASE_DEPS | {f"{AP}.phases.context", f"{AP}.phases.bagging"},
    f"{AP}.phases.final_fit": PHASE_DEPS | {f"{AP}.phases.common", f"{AP}.phases.context",
                                             f"{AP}.phases.ensemble", f"{AP}.phases.bagging", f"{AP}.phases.evidence"},
    # the run and the command line
    "run": {f"{AP}.cli"},                             # run.py: parses the command line, calls one function
    f"{AP}.pipeline": {"budget", "submission"} | {f"{AP}.{m}" for m in (
        "bohb", "checkpoints", "data", "delivery", "errors", "phases", "reporting", "runlog", "settings", "training")},
    f"{AP}.cli": {f"{AP}.{m}" for m in ("pipeline", "compare", "bohb.remote", "search_options", "settings")},
    AP: set(),                                       # the package's __init__ (see EXACT)
}
# Keys that are a package's __init__ only: a module inside needs a rule of its own.
EXACT = {AP, f"{AP}.phases"}
# Libraries a part of the project never imports (the first dotted name of the import).
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "budget": {"torch", "torchvision"},
    f"{AP}.ensemble": {"torch", "torchvision"},
}


class Source(NamedTuple):
    where: str        # the file, relative to the repository
    package: str      # what relative imports resolve against
    text: str


def read_sources() -> dict[str, Source]:
    """run.py ("run") and every project module, by dotted name."""
    files = [REPO / "run.py"] + [path for root in ROOTS for path in sorted((REPO / root).rglob("*.py"))]
    sources = {}
    for path in files:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        sources[name] = Source(str(path.relative_to(REPO)), name if is_package else name.rpartition(".")[0],
                               path.read_text())
    return sources


def imported_names(source: Source, known: set[str]) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the source, also those inside functions; `from X import y`
    counts as X.y when that is a module, else as X; relative imports are resolved."""
    found = []
    for node in ast.walk(ast.parse(source.text, filename=source.where)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = source.package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if full in known else base))
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(name: str) -> str | None:
    keys = [key for key in RULES if (name == key if key in EXACT else within(name, key))]
    return max(keys, key=len) if keys else None


def allowed(name: str, target: str) -> bool:
    """Whether module `name` may import project module `target`: inside its rule's own package or module
    (not for an EXACT key), or inside one of the rule's entries."""
    key = rule_for(name)
    return (key not in EXACT and within(target, key)) or any(within(target, a) for a in RULES[key])


def violations(sources: dict[str, Source]) -> list[str]:
    """One line per import that breaks its module's rule (modules without a rule are skipped)."""
    known = set(sources)
    out = []
    for name, source in sources.items():
        key = rule_for(name)
        if key is None:
            continue                                 # reported by test_every_module_has_a_rule
        libraries = {lib for prefix, libs in FORBIDDEN_LIBRARIES.items() if within(name, prefix) for lib in libs}
        for line, target in imported_names(source, known):
            where = f"{source.where}:{line}"
            if target.split(".")[0] in libraries:
                out.append(f"{where}: {name} imports {target}, never allowed under {key!r}")
            elif target.split(".")[0] in ROOTS and not allowed(name, target):
                out.append(f"{where}: {name} imports {target}; rule {key!r} allows "
                           f"{sorted(RULES[key]) or 'nothing outside itself'}")
    return out


def test_every_module_has_a_rule():
    missing = [name for name in read_sources() if rule_for(name) is None]
    assert not missing, f"no import rule for {missing}: add one to RULES and to docs/ARCHITECTURE.md"


def test_imports_follow_the_rules():
    found = violations(read_sources())
    assert not found, "\n".join(found)


def test_the_rules_name_only_existing_modules():
    modules = read_sources()
    named = set(RULES) | set(FORBIDDEN_LIBRARIES) | {target for targets in RULES.values() for target in targets}
    stale = sorted(n for n in named if not any(within(m, n) for m in modules))
    assert not stale, f"RULES name modules that do not exist: {stale}"


@pytest.mark.parametrize("importer,added,expected", [
    ("budget.clock", "import torch", "imports torch, never allowed"),
    ("budget.manager", "from automl_pipeline.errors import InputError", "allows nothing outside itself"),
    ("submission.writer", "from automl_pipeline import pipeline", "imports automl_pipeline.pipeline"),
    ("automl_pipeline.training.losses", "def f():\n    from automl_pipeline.bohb import space",
     "imports automl_pipeline.bohb.space"),
    ("automl_pipeline.search_space.network", "from budget.clock import Clock", "imports budget.clock"),
    ("automl_pipeline.phases.architecture", "from automl_pipeline.phases import first_model",
     "imports automl_pipeline.phases.first_model"),
    ("automl_pipeline.darts.search", "from ..pipeline import run", "imports automl_pipeline.pipeline"),
    ("automl_pipeline.ensemble", "import torch.nn", "imports torch.nn, never allowed"),
])
def test_a_wrong_import_is_caught(importer, added, expected):
    """The checker on one module's source with a forbidden import appended (the files are untouched)."""
    sources = read_sources()
    sources[importer] = sources[importer]._replace(text=sources[importer].text + "\n" + added + "\n")
    found = [v for v in violations(sources) if f": {importer} " in v and expected in v]
    assert found, f"{importer} + {added!r} was not reported"


def test_a_new_top_level_or_phase_module_needs_a_rule():
    assert rule_for("automl_pipeline.new_module") is None and rule_for("automl_pipeline.phases.new_phase") is None
    assert rule_for("automl_pipeline.bohb.new_module") == "automl_pipeline.bohb"     # its package's rule
