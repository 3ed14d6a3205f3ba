"""Patches as data: what to swap while a model is traced, applied only inside ``patched``.

A :class:`Patch` names an object (a module path such as ``"transformers.models.t5"`` or the
object itself), an attribute, and either a replacement value or a ``wrap`` function that gets the
original and returns the replacement. ``patched(patches)`` applies them in order and restores
every one on exit, in reverse order, even when the body raises.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from onnxspec.errors import SpecError

__all__ = ["Patch", "patched", "resolve_target"]

_ABSENT = object()


@attrs.frozen(kw_only=True)
class Patch:
    """Replace ``target.attribute`` while tracing, by ``value`` or by ``wrap(original)``."""

    target: Any
    attribute: str
    value: Any = _ABSENT
    wrap: Callable[[Any], Any] | None = None
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if (self.value is _ABSENT) == (self.wrap is None):
            raise SpecError(f"Patch of {self.attribute!r}: give exactly one of value= or wrap=")

    def __repr__(self) -> str:
        where = self.target if isinstance(self.target, str) else getattr(self.target, "__name__", repr(self.target))
        return f"Patch({where}.{self.attribute}{': ' + self.reason if self.reason else ''})"


def resolve_target(target: Any) -> Any:
    """The object a patch target names: a dotted import path ``"pkg.mod:Attr.sub"`` or the object."""
    if not isinstance(target, str):
        return target
    module_path, _, inner = target.partition(":")
    try:
        obj = importlib.import_module(module_path)
    except ImportError as e:
        raise SpecError(f"patch target {target!r}: cannot import {module_path!r}") from e
    for part in filter(None, inner.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise SpecError(f"patch target {target!r}: {module_path!r} has no attribute path {inner!r} (missing {part!r})") from e
    return obj


@contextlib.contextmanager
def patched(patches: Sequence[Patch]) -> Iterator[None]:
    """Apply ``patches`` for the duration of the block; restore all of them on exit."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        for patch in patches:
            obj = resolve_target(patch.target)
            try:
                current = getattr(obj, patch.attribute)
            except AttributeError as e:
                raise SpecError(f"{patch!r}: the target has no attribute {patch.attribute!r} to patch") from e
            # Own attributes are put back as stored (descriptors included); inherited ones are
            # deleted again so inheritance shows through; objects without __dict__ get the value.
            own = getattr(obj, "__dict__", None)
            original = own.get(patch.attribute, _ABSENT) if own is not None else current
            new = patch.wrap(current) if patch.wrap is not None else patch.value
            if patch.wrap is not None and isinstance(original, (staticmethod, classmethod)) and not isinstance(new, (staticmethod, classmethod)):
                # ``current`` was already unwrapped (and bound to the class); keep the result
                # callable from instances too, as the original was
                new = staticmethod(new)
            setattr(obj, patch.attribute, new)
            undo.append((obj, patch.attribute, original))  # only once applied: a failed setattr has nothing to undo
        yield
    finally:
        for obj, attribute, original in reversed(undo):
            if original is _ABSENT:
                delattr(obj, attribute)
            else:
                setattr(obj, attribute, original)
