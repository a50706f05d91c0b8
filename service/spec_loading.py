"""Reading a spec: YAML text or a dict, a preset's scale applied, validated and planned.

Every mistake becomes ``SpecError`` with one line naming the field, before Ray starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.errors import SpecError
from service.plan import SweepPlan, input_problems, plan_sweep
from service.spec import GRID_OWNED, TRIAL_FIELDS, SweepSpec
from trainers.estimators import ESTIMATORS

_INT_LIMIT = 2**62  # integers land in int64 columns (seed offsets are added to seeds)
_MAX_VALUES = 100_000  # a spec is small; YAML aliases can make a tiny file expand to billions


def _check_values(data: Any) -> None:
    """Every integer fits the int64 Parquet columns (and torch/numpy seeds); no structure
    contains itself (``a: &a [*a]``) and the document has at most ``_MAX_VALUES`` values
    with YAML aliases expanded (an alias bomb), before anything walks or hashes it."""
    count = 0

    def walk(value: Any, where: str, ancestors: set[int]) -> None:
        nonlocal count
        count += 1
        if count > _MAX_VALUES:
            raise SpecError(f"spec: more than {_MAX_VALUES} values once YAML aliases are expanded")
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > _INT_LIMIT:
                raise SpecError(
                    f"{where or 'spec'}: {value} is out of range (integers must be within ±2**62)"
                )
        elif isinstance(value, (dict, list)):
            if id(value) in ancestors:
                raise SpecError(f"{where or 'spec'}: a YAML alias that contains itself")
            ancestors.add(id(value))
            for key, item in value.items() if isinstance(value, dict) else enumerate(value):
                walk(item, f"{where}.{key}" if where else str(key), ancestors)
            ancestors.discard(id(value))

    try:
        walk(data, "", set())
    except RecursionError:
        raise SpecError("spec: nested too deeply") from None


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{loc}: {msg}"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def apply_scale(data: dict[str, Any], scale: str | None) -> dict[str, Any]:
    """Resolve a preset's ``scales`` block: ``scales: {smoke: {...}, paper: {...}}`` holds
    overrides deep-merged into the spec. Without ``scale`` the first one listed is used
    (presets list ``smoke`` first, so the default runs in minutes on a laptop)."""
    scales = data.get("scales")
    if scales is None:
        if scale is not None:
            raise SpecError(f"--scale {scale}: this spec defines no scales")
        return data
    if (
        not isinstance(scales, dict)
        or not scales
        or not all(isinstance(v, dict) for v in scales.values())
    ):
        raise SpecError("scales: expected a mapping of scale name -> overrides")
    name = scale if scale is not None else next(iter(scales))
    if name not in scales:
        raise SpecError(f"--scale {name}: not one of {', '.join(scales)}")
    resolved = _deep_merge({k: v for k, v in data.items() if k != "scales"}, scales[name])
    chosen = (scales[name].get("grid") or {}).get("estimators")
    if isinstance(chosen, list) and isinstance(resolved.get("estimators"), dict):
        # a scale that narrows the grid's estimators drops the others' sections with them
        resolved["estimators"] = {k: v for k, v in resolved["estimators"].items() if k in chosen}
    resolved["name"] = (
        f"{resolved.get('name', 'sweep')}-{name}"
        if isinstance(resolved.get("name"), str)
        else resolved.get("name")
    )
    return resolved


def parse_spec(data: Any, scale: str | None = None, check_files: bool = True) -> SweepPlan:
    """Validate a spec dict and expand it once, so every error surfaces here."""
    if not isinstance(data, dict):
        raise SpecError("spec: expected a YAML mapping at the top level")
    data = apply_scale(data, scale)
    _check_values(data)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err)) from None
    plan = plan_sweep(spec)
    problems = input_problems(plan) if check_files else []
    if problems:
        raise SpecError(problems[0])
    for key in spec.search.space:
        if key not in TRIAL_FIELDS - GRID_OWNED and not any(
            key in {f.name for f in dataclasses.fields(ESTIMATORS[e].config_class)}
            for e in spec.grid.estimators
        ):
            raise SpecError(
                f"search.space.{key}: not a trial setting nor an option of any estimator in the "
                "grid"
            )
    return plan


def load_spec(path: str | Path, scale: str | None = None, check_files: bool = True) -> SweepPlan:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err})") from None
    return load_spec_text(text, str(path), scale, check_files)


def load_spec_text(
    text: str, origin: str, scale: str | None = None, check_files: bool = True
) -> SweepPlan:
    """A spec from YAML text; ``origin`` (a file name, an environment variable) names it in
    errors."""
    try:
        data = yaml.safe_load(text)  # safe_load only: a spec is data, it never constructs objects
    except yaml.YAMLError as err:
        raise SpecError(f"{origin}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise SpecError(f"{origin}: not valid YAML (nested too deeply)") from None
    return parse_spec(data, scale, check_files)
