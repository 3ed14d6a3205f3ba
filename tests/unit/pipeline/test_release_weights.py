"""The torch weights of a model the pipeline loaded itself go to the meta device before
onnxruntime opens the last graph; a caller's model, and a graph a later file still needs, keep them."""

from __future__ import annotations

import torch

import onnxspec.pipeline.core as core
from onnxspec.pipeline.core import export
from tests.tiny import tiny_folder, tiny_model

TASK = "text-generation-with-past"


def _devices_at_session(monkeypatch, model: torch.nn.Module | None = None) -> list[set[str]]:
    """The devices of the exported model's parameters when each validation session opens: the
    caller's ``model``, else the one the pipeline loads (caught as it is loaded)."""
    seen: list[set[str]] = []
    models = [model] if model is not None else []
    opened, load = core._session, core.load_source_model

    def loaded(*args, **kwargs):
        models.append(load(*args, **kwargs))
        return models[-1]

    def session(path: str, runtime: str = "onnxruntime", **options):
        seen.append({p.device.type for p in models[0].parameters()})
        return opened(path, runtime, **options)

    monkeypatch.setattr(core, "load_source_model", loaded)
    monkeypatch.setattr(core, "_session", session)
    return seen


def test_a_folder_model_is_dropped_before_the_last_session_and_still_validates(tmp_path, monkeypatch) -> None:
    folder = tiny_folder("llama", "text-generation", tmp_path / "llama")
    seen = _devices_at_session(monkeypatch)
    report = export(folder, tmp_path / "out", task=TASK)
    assert report.passed
    assert seen == [{"meta"}]


def test_a_callers_model_keeps_its_weights(tmp_path, monkeypatch) -> None:
    model = tiny_model("llama", "text-generation")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = _devices_at_session(monkeypatch, model)
    assert export(model, tmp_path / "out", task=TASK).passed
    assert seen == [{"cpu"}]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_only_the_last_file_releases_and_never_a_callers_model() -> None:
    def job(files: tuple[str, ...], source: object) -> core._Job:
        resolved = core._Resolved(spec=None, source=source, backend=core.Backend.TORCHSCRIPT, files=files)  # type: ignore[arg-type]
        return core._Job(request=None, resolved=resolved, workdir="")  # type: ignore[arg-type]

    files = ("decoder", "decoder_with_past", "merged")
    assert not core._releasable(job(files, object()), files[1])  # the merged decoder still runs the model
    assert core._releasable(job(files, object()), files[2])
    assert not core._releasable(job(files, None), files[2])  # a caller's model
