"""Model entries as data, the registry built from them, and ``spec_for``.

A :class:`ModelEntry` is a model type, the family function that builds its specs, the family
options that set it apart, and the tasks it supports (``-with-past`` where a cache applies).
:func:`build_registry` turns entries into a read-only mapping and refuses duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from onnxspec.errors import SpecError, UnknownNameError, UnsupportedTaskError
from onnxspec.pieces.spec import ModelSpec
from onnxspec.pieces.tasks import parse_task

__all__ = ["ModelEntry", "Registry", "build_registry", "entry", "lookup", "spec_for", "supported_tasks"]


def _ro(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class ModelEntry:
    """One architecture: its family, the options that set it apart, and its tasks."""

    model_type: str
    family: Callable[..., ModelSpec]
    tasks: tuple[str, ...] = attrs.field(converter=tuple)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_ro, hash=False)
    task_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_ro, hash=False)
    task_families: Mapping[str, Callable[..., ModelSpec]] = attrs.field(factory=dict, converter=_ro, hash=False)
    architecture_tasks: Mapping[str, str] = attrs.field(factory=dict, converter=_ro, hash=False)

    @tasks.validator
    def _check_tasks(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        if not value:
            raise SpecError(f"model entry {self.model_type!r} lists no task")
        for task in value:
            parsed = parse_task(task)
            if str(parsed) != task:
                raise SpecError(f"model entry {self.model_type!r}: task {task!r} is not canonical; write {str(parsed)!r}")


def entry(
    model_type: str,
    family: Callable[..., ModelSpec],
    tasks: Iterable[str],
    *,
    task_options: Mapping[str, Mapping[str, Any]] | None = None,
    task_families: Mapping[str, Callable[..., ModelSpec]] | None = None,
    architecture_tasks: Mapping[str, str] | None = None,
    **options: Any,
) -> ModelEntry:
    """Shorthand for a :class:`ModelEntry`; ``options`` go to the family function.

    ``task_families`` / ``task_options`` change the family or its options for one task (a
    seq2seq model's causal-LM head is a decoder-only graph).
    """
    return ModelEntry(
        model_type=model_type,
        family=family,
        tasks=tuple(tasks),
        options=options,
        task_options=task_options or {},
        task_families=task_families or {},
        architecture_tasks=architecture_tasks or {},
    )


Registry = Mapping[str, ModelEntry]


def build_registry(entries: Iterable[ModelEntry]) -> Registry:
    """A read-only mapping model type -> entry; a model type given twice is an error."""
    table: dict[str, ModelEntry] = {}
    spelled: dict[str, str] = {}  # lookup treats '-' and '_' alike, so 'big-bird' and 'big_bird' clash
    for e in entries:
        if e.model_type in table:
            raise SpecError(f"model type {e.model_type!r} is registered twice; each model type must have exactly one entry")
        key = e.model_type.replace("-", "_")
        if key in spelled:
            raise SpecError(
                f"model types {spelled[key]!r} and {e.model_type!r} differ only in '-' versus '_', which lookup treats "
                "alike; register one of them"
            )
        spelled[key] = e.model_type
        table[e.model_type] = e
    return MappingProxyType(table)


def lookup(registry: Registry, model_type: str) -> ModelEntry:
    """The entry of ``model_type``; unknown types raise with close matches."""
    found = registry.get(model_type) or registry.get(model_type.replace("_", "-")) or registry.get(model_type.replace("-", "_"))
    if found is None:
        raise UnknownNameError(
            "model type",
            model_type,
            registry,
            hint="Run `onnxspec models` to list supported model types, or compose a spec for it (see README: adding an architecture).",
        )
    return found


def supported_tasks(registry: Registry, model_type: str) -> tuple[str, ...]:
    """The tasks ``model_type`` supports, as registered."""
    return lookup(registry, model_type).tasks


def spec_for(registry: Registry, model_type: str, task: str, *, use_past: bool | None = None) -> ModelSpec:
    """The unbound spec for ``model_type`` and ``task``.

    ``task`` may be a synonym and may end in ``-with-past`` (export with a KV cache);
    ``use_past`` overrides that suffix.
    """
    e = lookup(registry, model_type)
    request = parse_task(task)
    if request.name not in {parse_task(t).name for t in e.tasks}:
        raise UnsupportedTaskError(
            f"model type {e.model_type!r} does not support task {request.name!r}; it supports: {', '.join(e.tasks)}"
        )
    past_registered = f"{request.name}-with-past" in e.tasks
    wants_past = request.with_past if use_past is None else use_past
    if wants_past and not past_registered:
        raise UnsupportedTaskError(
            f"model type {e.model_type!r} has no cache for task {request.name!r}: '{request.name}-with-past' is not among "
            f"its tasks ({', '.join(e.tasks)}); drop '-with-past' / --use-past"
        )
    if request.name in e.task_options:
        options = dict(e.task_options[request.name])
    else:
        options = dict(e.options)
    family = e.task_families.get(request.name, e.family)
    return family(e.model_type, request.name, use_past=wants_past, **options)
