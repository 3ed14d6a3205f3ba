"""Normalizers: where each canonical dimension lives in a given Hugging Face config.

A :class:`Normalizer` is data: canonical name -> one or more attribute paths to try in order
(``"text_config.hidden_size"``), or a function of the dimensions found so far (for derived
values such as ``head_dim``). :func:`normalize` reads every field once, up front, and reports
*all* missing ones in a single error. The result is a frozen :class:`Dims` record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Union

import attrs
import toolz

from onnxspec.errors import ConfigError, SpecError

__all__ = [
    "Derive",
    "Dims",
    "Normalizer",
    "Source",
    "derive",
    "normalize",
    "normalizer",
    "read_path",
]


@attrs.frozen
class Derive:
    """A dimension computed from the ones already resolved (``fn(found) -> value | None``)."""

    fn: Callable[[Mapping[str, Any]], Any]
    doc: str = ""

    def __repr__(self) -> str:
        return f"Derive({self.doc or self.fn.__name__})"


Source = Union[str, tuple[str, ...], Derive]
"""An attribute path, alternative paths tried in order, or a derivation."""


def derive(doc: str) -> Callable[[Callable[[Mapping[str, Any]], Any]], Derive]:
    """Decorator turning a function of the resolved dimensions into a :class:`Derive`."""
    return lambda fn: Derive(fn, doc)


def _freeze(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True, hash=False)
class Normalizer:
    """Canonical names -> sources, plus which names may be absent (resolved to ``None``)."""

    fields: Mapping[str, Source] = attrs.field(converter=_freeze)
    optional: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)

    @optional.validator
    def _check_optional(self, attribute: attrs.Attribute, value: frozenset[str]) -> None:
        unknown = sorted(value - set(self.fields))
        if unknown:
            raise SpecError(f"Normalizer.optional names {unknown} that are not among its fields {sorted(self.fields)}")

    def __hash__(self) -> int:
        return hash((tuple(self.fields.items()), self.optional))


def normalizer(base: Normalizer | None = None, *, optional: frozenset[str] | set[str] = frozenset(), **fields: Source) -> Normalizer:
    """A normalizer: ``base`` with ``fields`` added or replaced, ``optional`` names added.

    >>> normalizer(hidden_size="d_model").fields["hidden_size"]
    'd_model'
    """
    merged = toolz.merge(base.fields if base else {}, fields)
    opt = (base.optional if base else frozenset()) | frozenset(optional)
    return Normalizer(fields=merged, optional=opt)  # an optional name that is no field is an error


_MISSING = object()


def read_path(config: Any, path: str) -> Any:
    """``config.a.b`` for ``path="a.b"``; dict configs too. Returns a sentinel when absent."""
    value = config
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            value = getattr(value, part, _MISSING)
        if value is _MISSING or value is None:
            return _MISSING
    return value


@attrs.frozen
class Dims:
    """Resolved canonical dimensions of one config: read-only, with a helpful ``require``."""

    values: Mapping[str, Any] = attrs.field(converter=_freeze)
    model_type: str = ""

    def __getitem__(self, name: str) -> Any:
        return self.require(name)[0]

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    def require(self, *names: str) -> tuple[Any, ...]:
        """The values of ``names``; raises one error listing every one that is absent."""
        missing = [n for n in names if self.values.get(n) is None]
        if missing:
            raise ConfigError(
                f"config of model type {self.model_type!r} has no value for {missing}; "
                f"known dimensions: {sorted(k for k, v in self.values.items() if v is not None)}"
            )
        return tuple(self.values[n] for n in names)

    def __hash__(self) -> int:
        return hash(tuple(sorted(((k, _hashable(v)) for k, v in self.values.items()), key=lambda kv: kv[0])))


def _hashable(value: Any) -> Any:
    """Config values may be lists (``image_size=[224, 224]``); hash them as tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


def normalize(norm: Normalizer, config: Any) -> Dims:
    """Resolve every field of ``norm`` against ``config`` at once.

    Paths are tried in order; derivations run after all paths, in declaration order, and see
    what was found so far. Every required field that stays unresolved is reported together.
    """
    found: dict[str, Any] = {}
    tried: dict[str, tuple[str, ...]] = {}
    for name, source in norm.fields.items():
        if isinstance(source, Derive):
            continue
        paths = (source,) if isinstance(source, str) else tuple(source)
        tried[name] = paths
        for path in paths:
            value = read_path(config, path)
            if value is not _MISSING:
                found[name] = value
                break
    for name, source in norm.fields.items():
        if isinstance(source, Derive):
            try:
                value = source.fn(found)
            except (KeyError, TypeError, ZeroDivisionError):
                value = None
            if value is not None:
                found[name] = value
    model_type = str(read_path(config, "model_type") if read_path(config, "model_type") is not _MISSING else "")
    missing = [n for n in norm.fields if n not in found and n not in norm.optional]
    if missing:
        where = "; ".join(
            f"{n} (looked for {', '.join(tried[n])})" if n in tried else f"{n} (derived: {norm.fields[n]!r})"
            for n in missing
        )
        raise ConfigError(
            f"config of model type {model_type!r} is missing {len(missing)} field(s) the spec needs: {where}. "
            "Fix the config, or give the spec a normalizer that points at where these live."
        )
    return Dims({n: found.get(n) for n in norm.fields}, model_type)
