"""A head that needs a package to be built (MaskFormer's segmentation head imports scipy for its
training matcher) is refused with the package and how to install it, before transformers fails."""

from __future__ import annotations

import importlib.util

import pytest

from onnxspec.errors import ModelLoadError
from onnxspec.pipeline import loading
from onnxspec.pipeline.loading import read_source, load_source_model
from tests.tiny import tiny_folder


def _without(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def test_maskformer_segmentation_without_scipy_names_the_extra(tmp_path, monkeypatch) -> None:
    folder = tiny_folder("maskformer", "image-segmentation", tmp_path / "model")
    _without(monkeypatch, "scipy")
    with pytest.raises(ModelLoadError, match=r"MaskFormerForInstanceSegmentation needs the 'scipy' package.*onnxspec\[segmentation\]"):
        load_source_model(read_source(folder), "image-segmentation")


def test_maskformer_segmentation_with_scipy_loads_its_head(tmp_path) -> None:
    folder = tiny_folder("maskformer", "image-segmentation", tmp_path / "model")
    model = load_source_model(read_source(folder), "image-segmentation")
    assert type(model).__name__ == "MaskFormerForInstanceSegmentation"


def test_heads_needing_nothing_pass() -> None:
    loading.require_head_packages("BertModel")
