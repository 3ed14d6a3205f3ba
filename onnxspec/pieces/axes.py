"""Tensor specs: one named graph input or output, its dynamic axes and its dtype kind.

A spec is a value. ``axes_view`` turns a tuple of specs into the ``{name: {axis: symbol}}``
mapping that code written against Optimum's ``inputs`` / ``outputs`` properties reads.
Symbols may be sums (``"past_sequence_length + sequence_length"``); :func:`symbol_size`
resolves them against a size table.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

import attrs

from onnxspec.errors import SpecError

__all__ = [
    "Kind",
    "TensorSpec",
    "axes_view",
    "merge_specs",
    "names",
    "rename",
    "spec",
    "symbol_size",
    "symbol_terms",
]

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*( \+ [A-Za-z_][A-Za-z0-9_]*)*$")


class Kind(enum.Enum):
    """What a tensor's dtype follows: the int dtype, the float dtype, or always bool."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


def _freeze_axes(value: Mapping[int, str] | Iterable[tuple[int, str]]) -> tuple[tuple[int, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((int(k), str(v)) for k, v in items))


def _check_axes(inst: TensorSpec, attribute: attrs.Attribute, value: tuple[tuple[int, str], ...]) -> None:
    seen: set[int] = set()
    for index, symbol in value:
        if index < 0:
            raise SpecError(f"tensor {inst.name!r}: axis index must be >= 0, got {index}")
        if index in seen:
            raise SpecError(f"tensor {inst.name!r}: axis {index} is declared twice")
        seen.add(index)
        if not _SYMBOL.fullmatch(symbol):
            raise SpecError(
                f"tensor {inst.name!r}: axis {index} symbol {symbol!r} is not an identifier "
                "or a sum of identifiers like 'past_sequence_length + sequence_length'"
            )
        if inst.rank is not None and index >= inst.rank:
            raise SpecError(
                f"tensor {inst.name!r}: axis index {index} is beyond its rank {inst.rank}; "
                f"valid indices are 0..{inst.rank - 1}"
            )


def _check_name(inst: TensorSpec, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise SpecError(f"tensor name must be a non-empty string, got {value!r}")


def _check_rank(inst: TensorSpec, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise SpecError(f"tensor {inst.name!r}: rank must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class TensorSpec:
    """A graph input or output: its name, dynamic axes ``{index: symbol}`` and dtype kind.

    ``rank`` is optional; when given, axis indices are checked against it.
    """

    name: str = attrs.field(validator=_check_name)
    rank: int | None = attrs.field(default=None, validator=_check_rank)
    axes: tuple[tuple[int, str], ...] = attrs.field(converter=_freeze_axes, validator=_check_axes, factory=tuple)
    kind: Kind = attrs.field(default=Kind.FLOAT, validator=attrs.validators.instance_of(Kind))

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """The dynamic axes as a fresh dict (changing it changes nothing here)."""
        return dict(self.axes)

    def __repr__(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        return f"TensorSpec({self.name!r}, {dict(self.axes)}, {self.kind.value}{rank})"


def spec(name: str, axes: Mapping[int, str], kind: Kind = Kind.FLOAT, rank: int | None = None) -> TensorSpec:
    """Shorthand for ``TensorSpec(name=..., axes=..., kind=..., rank=...)``.

    >>> spec("input_ids", {0: "batch_size", 1: "sequence_length"}, Kind.INT).dynamic_axes
    {0: 'batch_size', 1: 'sequence_length'}
    """
    return TensorSpec(name=name, axes=axes, kind=kind, rank=rank)


def names(specs: Iterable[TensorSpec]) -> tuple[str, ...]:
    """The names of ``specs``, in order."""
    return tuple(s.name for s in specs)


def axes_view(specs: Iterable[TensorSpec]) -> dict[str, dict[int, str]]:
    """``{name: {axis: symbol}}``, the shape of Optimum's ``inputs`` / ``outputs`` properties.

    >>> axes_view([spec("logits", {0: "batch_size"})])
    {'logits': {0: 'batch_size'}}
    """
    return {s.name: s.dynamic_axes for s in specs}


def merge_specs(*groups: Iterable[TensorSpec]) -> tuple[TensorSpec, ...]:
    """Concatenate groups of specs; a name given twice must be the same spec, else it raises.

    Order is first appearance. Identical repeats collapse to one.
    """
    out: dict[str, TensorSpec] = {}
    for group in groups:
        for s in group:
            prior = out.get(s.name)
            if prior is not None and prior != s:
                raise SpecError(f"tensor {s.name!r} is declared twice with different specs: {prior!r} and {s!r}")
            out.setdefault(s.name, s)
    return tuple(out.values())


def rename(specs: Iterable[TensorSpec], mapping: Mapping[str, str]) -> tuple[TensorSpec, ...]:
    """Specs with names changed by ``mapping`` (names not in it are kept)."""
    return tuple(attrs.evolve(s, name=mapping.get(s.name, s.name)) for s in specs)


def symbol_terms(symbol: str) -> tuple[str, ...]:
    """The identifiers summed in ``symbol``: ``"a + b"`` -> ``("a", "b")``."""
    return tuple(t.strip() for t in symbol.split("+"))


def symbol_size(symbol: str, sizes: Mapping[str, int]) -> int:
    """The size ``symbol`` stands for, given the size of each identifier.

    >>> symbol_size("past_sequence_length + sequence_length", {"past_sequence_length": 3, "sequence_length": 2})
    5
    """
    missing = [t for t in symbol_terms(symbol) if t not in sizes]
    if missing:
        raise SpecError(f"axis symbol {symbol!r}: no size known for {missing}; known: {sorted(sizes)}")
    return sum(sizes[t] for t in symbol_terms(symbol))
