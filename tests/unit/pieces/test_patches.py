"""Patches: applied only inside ``patched``, restored on exit even on error, wrap vs value."""

from __future__ import annotations

import sys
import types

import pytest

from onnxspec.errors import SpecError
from onnxspec.pieces.patches import Patch, patched, resolve_target


class Holder:
    """A patch target with a plain attribute, a method and a static method."""

    limit = 3

    def scale(self, x: int) -> int:
        return 2 * x

    @staticmethod
    def helper() -> str:
        return "original"


class Child(Holder):
    pass


class Slotted:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 1


def test_value_patch_applies_only_inside_the_block() -> None:
    with patched([Patch(target=Holder, attribute="limit", value=9)]):
        assert Holder.limit == 9
    assert Holder.limit == 3


def test_wrap_receives_the_original_and_its_result_is_used() -> None:
    seen = []

    def wrap(original):  # type: ignore[no-untyped-def]
        seen.append(original)
        return lambda self, x: original(self, x) + 1

    with patched([Patch(target=Holder, attribute="scale", wrap=wrap)]):
        assert Holder().scale(5) == 11
    assert Holder().scale(5) == 10
    assert seen == [Holder.__dict__["scale"]]


def test_restored_on_error_and_the_error_propagates() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with patched([Patch(target=Holder, attribute="limit", value=0), Patch(target=Holder, attribute="helper", value=lambda: "new")]):
            assert Holder.helper() == "new"
            raise RuntimeError("boom")
    assert Holder.limit == 3 and Holder.helper() == "original"
    assert isinstance(Holder.__dict__["helper"], staticmethod), "the descriptor itself is put back"


def test_a_patch_that_fails_to_apply_undoes_the_ones_before_it() -> None:
    patches = [Patch(target=Holder, attribute="limit", value=0), Patch(target=Holder, attribute="missing", value=1)]
    with pytest.raises((SpecError, AttributeError), match="missing"):
        with patched(patches):
            pass  # pragma: no cover
    assert Holder.limit == 3 and not hasattr(Holder, "missing")


def test_inherited_attributes_are_restored_to_inheritance_not_copied() -> None:
    with patched([Patch(target=Child, attribute="limit", value=7)]):
        assert Child.limit == 7 and Holder.limit == 3
    assert "limit" not in Child.__dict__
    instance = Holder()
    with patched([Patch(target=instance, attribute="scale", value=lambda x: 0)]):
        assert instance.scale(4) == 0 and Holder().scale(4) == 8
    assert "scale" not in vars(instance) and instance.scale(4) == 8


def test_objects_without_a_dict_get_their_value_back() -> None:
    obj = Slotted()
    with patched([Patch(target=obj, attribute="value", value=5)]):
        assert obj.value == 5
    assert obj.value == 1


def test_two_patches_of_one_attribute_unwind_in_reverse() -> None:
    patches = [Patch(target=Holder, attribute="limit", value=10), Patch(target=Holder, attribute="limit", wrap=lambda v: v + 1)]
    with patched(patches):
        assert Holder.limit == 11
    assert Holder.limit == 3


def test_string_targets_name_a_module_and_an_attribute_path(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("onnxspec_test_patch_target")
    module.Holder = Holder  # type: ignore[attr-defined]
    module.flag = False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert resolve_target(f"{module.__name__}:Holder") is Holder
    with patched([Patch(target=module.__name__, attribute="flag", value=True), Patch(target=f"{module.__name__}:Holder", attribute="limit", value=1)]):
        assert module.flag is True and Holder.limit == 1  # type: ignore[attr-defined]
    assert module.flag is False and Holder.limit == 3  # type: ignore[attr-defined]


def test_bad_targets_raise_spec_errors_naming_them() -> None:
    with pytest.raises(SpecError, match="no_such_module_xyz"):
        resolve_target("no_such_module_xyz.inner")
    with pytest.raises(SpecError, match="Nope"):
        resolve_target("types:Nope")


@pytest.mark.parametrize("kwargs", [{}, {"value": 1, "wrap": lambda v: v}])
def test_a_patch_needs_exactly_one_of_value_or_wrap(kwargs: dict[str, object]) -> None:
    with pytest.raises(SpecError, match="exactly one of value= or wrap="):
        Patch(target=Holder, attribute="limit", **kwargs)


def test_value_none_is_a_legal_replacement() -> None:
    with patched([Patch(target=Holder, attribute="limit", value=None)]):
        assert Holder.limit is None
    assert Holder.limit == 3


def test_patches_are_data_with_a_readable_repr() -> None:
    p = Patch(target="transformers.masking_utils", attribute="find_packed_sequence_indices", value=None, reason="tracing")
    assert repr(p) == "Patch(transformers.masking_utils.find_packed_sequence_indices: tracing)"
    assert p == Patch(target="transformers.masking_utils", attribute="find_packed_sequence_indices", value=None, reason="tracing")
    assert "Holder" in repr(Patch(target=Holder, attribute="limit", value=1))


def test_a_read_only_target_fails_with_its_own_error_and_earlier_patches_are_undone() -> None:
    with pytest.raises((AttributeError, TypeError)) as info:
        with patched([Patch(target=Holder, attribute="limit", value=0), Patch(target=object(), attribute="__class__", value=int)]):
            pass  # pragma: no cover
    assert "__class__" in str(info.value)
    assert Holder.limit == 3


class WithDescriptors:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def name(cls) -> str:
        return cls.__name__


def test_wrapping_static_and_class_methods_keeps_them_callable_from_instances() -> None:
    patches = [
        Patch(target=WithDescriptors, attribute="double", wrap=lambda f: lambda x: f(x) + 1),
        Patch(target=WithDescriptors, attribute="name", wrap=lambda f: lambda: f() + "!"),
    ]
    with patched(patches):
        assert WithDescriptors.double(3) == 7 and WithDescriptors().double(3) == 7
        assert WithDescriptors.name() == "WithDescriptors!" and WithDescriptors().name() == "WithDescriptors!"
    assert WithDescriptors().double(3) == 6 and WithDescriptors().name() == "WithDescriptors"
    assert isinstance(WithDescriptors.__dict__["name"], classmethod)
