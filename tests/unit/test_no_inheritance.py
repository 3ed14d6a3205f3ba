"""The design rule: no class inheritance inside onnxspec.

Every class defined in an onnxspec module may only have ``object``, an exception type,
``enum.Enum`` or ``typing.Protocol`` as bases (the trace wrapper is a plain ``torch.nn.Module``
instance built by ``wrappers.graph_module``, not a subclass). No class may inherit from another
onnxspec class, except exception types from ``errors.py``.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import typing

import torch

import onnxspec

def _modules() -> list[object]:
    names = [m.name for m in pkgutil.walk_packages(onnxspec.__path__, prefix="onnxspec.")]
    return [onnxspec, *(importlib.import_module(n) for n in names)]


def _classes() -> list[type]:
    found: dict[str, type] = {}
    for module in _modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__:  # type: ignore[attr-defined]
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
                # classes nested in classes count too
                for _, inner in inspect.getmembers(obj, inspect.isclass):
                    if inner.__module__ == module.__name__ and inner.__qualname__.startswith(obj.__qualname__ + "."):  # type: ignore[attr-defined]
                        found[f"{inner.__module__}.{inner.__qualname__}"] = inner
    return list(found.values())


def _is_protocol_base(base: type) -> bool:
    return base is typing.Protocol or base is typing.Generic


def _problems(cls: type) -> list[str]:
    where = f"{cls.__module__}.{cls.__qualname__}"
    problems = []
    for base in cls.__bases__:
        if base is object or base is enum.Enum or _is_protocol_base(base):
            continue
        if issubclass(base, BaseException):
            if base.__module__.startswith("onnxspec") and base.__module__ != "onnxspec.errors":
                problems.append(f"{where} inherits from the onnxspec exception {base.__qualname__} outside errors.py")
            continue
        if base.__module__.startswith("onnxspec"):
            problems.append(f"{where} inherits from the onnxspec class {base.__module__}.{base.__qualname__}")
        else:
            problems.append(f"{where} has the base {base.__module__}.{base.__qualname__}")
    return problems


def test_the_walk_finds_the_classes_it_must_judge() -> None:
    found = {f"{c.__module__}.{c.__qualname__}" for c in _classes()}
    for name in ("onnxspec.pieces.spec.ModelSpec", "onnxspec.pieces.spec.GraphSpec", "onnxspec.pieces.kinds.GraphKind", "onnxspec.pieces.axes.TensorSpec", "onnxspec.errors.SpecError", "onnxspec.pieces.axes.Kind"):
        assert name in found
    assert len(found) >= 30


def test_the_trace_wrapper_is_a_plain_module_instance() -> None:
    from onnxspec.catalog.models import REGISTRY
    from onnxspec.catalog.registry import spec_for
    from onnxspec.pieces.spec import bind, plan
    from onnxspec.build.wrappers import graph_module
    from tests.tiny import CONFIGS, tiny_model

    (spec,) = plan(bind(spec_for(REGISTRY, "bert", "feature-extraction"), CONFIGS["bert"]()))
    module = graph_module(tiny_model("bert", "feature-extraction"), spec)
    assert type(module) is torch.nn.Module and not module.training


def test_no_class_in_onnxspec_inherits_beyond_the_allowed_bases() -> None:
    problems = [p for cls in _classes() for p in _problems(cls)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_inheritance() -> None:
    from onnxspec.pieces.axes import TensorSpec
    from onnxspec.errors import SpecError

    bad = type("Sub", (TensorSpec,), {"__module__": "onnxspec.fake"})
    bad_module = type("Wrapper", (torch.nn.Module,), {"__module__": "onnxspec.other"})
    stray_error = type("StrayError", (Exception,), {"__module__": "onnxspec.fake"})
    bad_error = type("Err", (stray_error,), {"__module__": "onnxspec.fake"})
    assert _problems(bad) and _problems(bad_module) and _problems(bad_error)
    assert not _problems(stray_error)
    assert not _problems(type("Err", (SpecError,), {"__module__": "onnxspec.fake"})), "errors.py types may be bases"
