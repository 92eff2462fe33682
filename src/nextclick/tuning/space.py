"""Parameter spaces as TOML files: fixed parameters plus ranges for Optuna to search.

    model = "gru4rec"                  # optional: the model the space is for
    [fixed]                            # parameters every trial uses
    loss = "cross-entropy"
    [params.learning_rate]             # one table per searched parameter
    type = "float"                     # int | float | categorical
    low = 0.01
    high = 0.25
    step = 0.005                       # optional; or log = true
    [params.elu_param]
    type = "categorical"
    choices = [0.0, 0.5, 1.0]

The published spaces ship with the package (``nextclick tune --space gru4rec-cross-entropy``);
any file path works too.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nextclick.errors import ConfigError

BUILTIN = ("gru4rec-cross-entropy", "gru4rec-bpr-max", "itemknn", "sknn", "vsknn", "narm",
           "stamp", "sasrec", "srgnn", "gcegnn")


@dataclass(frozen=True)
class Range:
    """One searched parameter."""

    name: str
    kind: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)  # fmt: skip
        value = trial.suggest_float(self.name, float(self.low), float(self.high),
                                    step=self.step, log=self.log)  # fmt: skip
        return self.clean(value)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this range can suggest (on its step grid)."""
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if not low <= value <= high:
            return False
        step = self.step or (1 if self.kind == "int" else None)
        return step is None or abs((value - low) / step - round((value - low) / step)) < 1e-9

    def clean(self, value: Any) -> Any:
        """A float on a step grid without its binary residue (0.7, not 0.7000000000000001)."""
        if self.kind != "float" or self.step is None:
            return value
        decimals = len(repr(float(self.step)).partition(".")[2].rstrip("0")) or 0
        return round(value, decimals + 1)


@dataclass(frozen=True)
class Space:
    """Fixed parameters and searched ranges, read from ``source``."""

    source: str
    model: str | None
    fixed: dict[str, Any]
    ranges: tuple[Range, ...]

    @property
    def name(self) -> str:
        return Path(self.source).stem

    def values(self, searched: dict[str, Any]) -> dict[str, Any]:
        """The model parameters of a trial: the fixed ones, then the searched ones."""
        ranges = {r.name: r for r in self.ranges}
        return {**self.fixed, **{k: ranges[k].clean(v) for k, v in searched.items()}}

    def defaults(self, config: dict[str, Any]) -> dict[str, Any]:
        """The searched parameters whose value in ``config`` (a model's ``Config``
        defaults) lies inside their range: the study's first trial."""
        found = [(r, _scalar(config[r.name])) for r in self.ranges if r.name in config]
        return {r.name: value for r, value in found if r.contains(value)}


def _scalar(value: Any) -> Any:
    """A one-layer size as a Config holds it, ``(224,)``, is the value a range searched."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return value[0]
    return value


def load_space(name_or_path: str | Path) -> Space:
    """A built-in space by name, or a TOML file."""
    text_name = str(name_or_path)
    if text_name in BUILTIN:
        text = resources.files("nextclick.tuning").joinpath(f"spaces/{text_name}.toml").read_text()
        return parse_space(text, f"{text_name}.toml")
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(
            f"--space {text_name}: no such file (built-in spaces: {', '.join(BUILTIN)})"
        ) from None
    return parse_space(text, str(path))


def parse_space(text: str, source: str) -> Space:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(data) - {"model", "fixed", "params"}
    if unknown:
        raise ConfigError(f"{source}: unknown table or key {sorted(unknown)[0]!r} "
                          "(expected model, [fixed], [params.NAME])")  # fmt: skip
    fixed = data.get("fixed", {})
    params = data.get("params", {})
    if not isinstance(fixed, dict) or not isinstance(params, dict) or not params:
        raise ConfigError(f"{source}: expected a [fixed] table and [params.NAME] tables")
    ranges = tuple(_range(source, name, spec) for name, spec in params.items())
    overlap = set(fixed) & set(params)
    if overlap:
        raise ConfigError(f"{source}: {sorted(overlap)[0]!r} is both fixed and searched")
    return Space(source, data.get("model"), dict(fixed), ranges)


def _range(source: str, name: str, spec: Any) -> Range:
    where = f"{source}: [params.{name}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a table")
    kind = spec.get("type")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "step",
                                                                  "log"}  # fmt: skip
    extra = set(spec) - allowed
    if kind not in ("int", "float", "categorical"):
        raise ConfigError(f"{where}: type must be int, float or categorical, got {kind!r}")
    if extra:
        raise ConfigError(f"{where}: unexpected key {sorted(extra)[0]!r} for type {kind}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return Range(name, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    numbers = (int, float) if kind == "float" else (int,)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must be {kind}s")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is above high ({high})")
    step, log = spec.get("step"), bool(spec.get("log", False))
    if step is not None and (not isinstance(step, numbers) or step <= 0 or log):
        raise ConfigError(f"{where}: step must be a positive {kind} (and not with log)")
    if log and low <= 0:
        raise ConfigError(f"{where}: log ranges need low > 0")
    return Range(name, kind, low, high, step, log)
