"""Search options: which parts of the method run, read from a `--search-config` JSON file.

The defaults are the full method. The file is a flat JSON object with any of these keys; an
unknown key, a wrong type or a value outside the choices is refused (exit 2, naming the file):

    darts              "search" (default) | "off" (no DARTS: the default cell) |
                       "random" (no DARTS search: a random cell from uniform alphas takes its place)
    extra_ops          false | true   DARTS also searches sep/dil convs and poolings (ops.EXTRA_OPS)
    second_order       false | true   DARTS' second-order (finite-difference) architecture gradient
    allow_zero         false | true   the derived cell may select the "none" (zero) operation
    grouping           false | true   derive the cell by grouping discretisation (thesis 3.5)
    max_skips          null | int>=0  at most this many skip_connect edges in the derived normal cell
    surrogate_skip     true | false   DARTS- surrogate skips (in DARTS, and BOHB may train with them)
    early_termination  true | false   stop DARTS when skips dominate (skip-based early termination)
    optimizer          "bohb" (default) | "random" (random search over the same space and budgets)
    loss               "search" (BOHB chooses) | "focal" (+ class weights) | "logit_adjusted" | "ce"
    bagging            "auto" (default: k-fold bagging of the final fit when budget.plan.bag_folds says it
                       fits) | "off" (always one final model)

The baseline (`--method baseline`) is the same pipeline with DARTS off, plain cross-entropy and no
surrogate skip (`BASELINE`, applied by `for_method`): of these options it keeps only `optimizer`.
The options are part of the run's settings (report.json `settings.search`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

DARTS_MODES = ("search", "off", "random")
OPTIMIZERS = ("bohb", "random")
LOSS_CHOICES = ("search", "focal", "logit_adjusted", "ce")
BAGGING_MODES = ("auto", "off")
# What `--method baseline` turns off; the one place that says what the baseline is.
BASELINE = {"darts": "off", "extra_ops": False, "second_order": False, "allow_zero": False, "grouping": False,
            "max_skips": None, "surrogate_skip": False, "early_termination": True, "loss": "ce"}


class SearchOptionsError(ValueError):
    """A search-config file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SearchOptions:
    """Which parts of the method run (module docstring); the defaults are the full method."""

    darts: str = "search"
    extra_ops: bool = False
    second_order: bool = False
    allow_zero: bool = False
    grouping: bool = False
    max_skips: int | None = None
    surrogate_skip: bool = True
    early_termination: bool = True
    optimizer: str = "bohb"
    loss: str = "search"
    bagging: str = "auto"

    def __post_init__(self) -> None:
        _choice("darts", self.darts, DARTS_MODES)
        _choice("bagging", self.bagging, BAGGING_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSS_CHOICES)
        for name in ("extra_ops", "second_order", "allow_zero", "grouping", "surrogate_skip", "early_termination"):
            if not isinstance(getattr(self, name), bool):
                raise SearchOptionsError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.max_skips is not None and (isinstance(self.max_skips, bool) or not isinstance(self.max_skips, int)
                                           or self.max_skips < 0):
            raise SearchOptionsError(f"max_skips must be null or an integer >= 0, got {self.max_skips!r}")

    def for_method(self, method: str) -> "SearchOptions":
        """The options a run of `method` uses: these, or for "baseline" these with BASELINE applied."""
        return dataclasses.replace(self, **BASELINE) if method == "baseline" else self

    @property
    def fixed_loss(self) -> str | None:
        """The training loss when the options fix it, else None (BOHB chooses)."""
        return None if self.loss == "search" else self.loss

    def changed(self) -> dict:
        """The options that differ from the full method (for logs and report.md)."""
        default = SearchOptions()
        return {k: v for k, v in self.to_json().items() if v != getattr(default, k)}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SearchOptions":
        """Validated options from a parsed JSON object (SearchOptionsError on anything unknown or wrong)."""
        if not isinstance(d, dict):
            raise SearchOptionsError(f"must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SearchOptionsError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "SearchOptions":
        """Read and validate a --search-config file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SearchOptionsError(f"{path}: cannot read it ({err})") from None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise SearchOptionsError(f"{path}: not valid JSON ({err})") from None
        try:
            return cls.from_json(parsed)
        except (SearchOptionsError, TypeError) as err:
            raise SearchOptionsError(f"{path}: {err}") from None


def _choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SearchOptionsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
