"""One check for the option names of a registry entry (a model's or a dataset's builder
keywords), shared by the registries and by ``TrialConfig``, which runs it when a spec is read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


def check_option_names(
    kind: str,
    name: str,
    options: Iterable[str],
    registry: Mapping[str, object],
    valid_for: Callable[[str], list[str]],
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error`` naming the unknown ``kind`` or option names, and what is valid."""
    if name not in registry:
        raise error(f"unknown {kind} {name!r}; valid names: {', '.join(registry)}")
    valid = valid_for(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise error(
            f"{name}: unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
