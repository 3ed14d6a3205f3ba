"""Loading a head no auto class of its task maps (PatchTST's forecaster) by its class name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T

from onnxspec.errors import UnsupportedTaskError
from onnxspec.pipeline.loading import load_model
from tests.tiny import tiny_folder

HEADS = {"patchtst": T.PatchTSTForPrediction, "patchtsmixer": T.PatchTSMixerForPrediction}


@pytest.mark.parametrize("model_type", sorted(HEADS))
def test_the_forecasting_head_loads_by_class_name_with_its_saved_weights(model_type: str, tmp_path: Path) -> None:
    folder = tiny_folder(model_type, "time-series-forecasting", tmp_path / "model", seed=3)
    saved = HEADS[model_type].from_pretrained(folder)
    loaded = load_model(folder, "time-series-forecasting")
    assert type(loaded) is HEADS[model_type] and not loaded.training
    mine, theirs = loaded.state_dict(), saved.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_model_type_with_no_forecasting_head_is_refused_naming_the_classes_tried(tmp_path: Path) -> None:
    folder = tiny_folder("bert", "feature-extraction", tmp_path / "bert")
    with pytest.raises(UnsupportedTaskError, match="AutoModelForTimeSeriesPrediction has no model for BertConfig"):
        load_model(folder, "time-series-forecasting")
