"""The stage runner and the stage tuple of an export, with no model and no export."""

from __future__ import annotations

import errno
import time

import attrs
import numpy as np
import pytest

from onnxspec.errors import ExportError, SpecError
from onnxspec.catalog.models import REGISTRY
from onnxspec.build.exporters import Backend
from onnxspec.pipeline.core import STAGES, _Job, _Request, _Resolved, export_stages, plan
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pipeline.stages import Stage, high_water, resident, run_stages, watch_memory


def _add(n: int):
    return lambda state: (*state, n)


def test_stages_run_in_order_and_are_listed_done() -> None:
    seen: list[tuple[str, str]] = []
    stages = (Stage(name="resolve", run=_add(1)), Stage(name="trace", detail="model.onnx", run=_add(2)))
    ran = run_stages(stages, (), progress=lambda s, d: seen.append((s, d)))
    assert (ran.state, ran.done) == ((1, 2), ("resolve", "trace:model.onnx"))
    assert seen == [("resolve", ""), ("trace", "model.onnx")]


def test_a_second_run_carries_on_the_stages_done() -> None:
    first = run_stages((Stage(name="resolve", run=_add(1)),), ())
    ran = run_stages((Stage(name="load", detail="my-bert", run=_add(2)),), first.state, done=first.done)
    assert ran.done == ("resolve", "load:my-bert") and ran.state == (1, 2)


def test_failure_names_the_stage_and_the_stages_done_and_chains_the_cause() -> None:
    def boom(state: tuple[int, ...]) -> tuple[int, ...]:
        raise KeyError("x")

    stages = (
        Stage(name="resolve", run=_add(1)),
        Stage(name="load", detail="my-bert", run=_add(2)),
        Stage(name="trace", detail="model.onnx", run=boom),
        Stage(name="write", run=_add(3)),
    )
    with pytest.raises(ExportError) as info:
        run_stages(stages, ())
    e = info.value
    assert str(e) == "stage 'trace (model.onnx)' failed (stages done: resolve, load:my-bert): KeyError: 'x'"
    assert e.stage == "trace (model.onnx)" and e.done == ("resolve", "load:my-bert")
    assert isinstance(e.__cause__, KeyError)


def test_input_errors_pass_through_unwrapped() -> None:
    def refuse(state: object) -> object:
        raise SpecError("bad spec; fix it")

    with pytest.raises(SpecError, match="bad spec"):
        run_stages((Stage(name="resolve", run=refuse),), None)


def test_a_full_disk_says_so_and_how_to_fix_it() -> None:
    def full(state: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ExportError) as info:
        run_stages((Stage(name="check", detail="model.onnx", run=full),), None)
    assert "no space left on the device" in str(info.value) and "free some space" in str(info.value)


def test_the_fault_seam_fails_the_stage_after_its_work() -> None:
    ran_before_fault: list[int] = []

    def work(state: tuple[int, ...]) -> tuple[int, ...]:
        ran_before_fault.append(1)
        return state

    def fault(stage: str, detail: str) -> None:
        if stage == "validate":
            raise RuntimeError("injected")

    stages = (Stage(name="dummies", detail="a.onnx", run=work), Stage(name="validate", detail="a.onnx", run=work))
    with pytest.raises(ExportError) as info:
        run_stages(stages, (), fault=fault)
    assert ran_before_fault == [1, 1]
    assert info.value.stage == "validate (a.onnx)" and info.value.done == ("dummies:a.onnx",)


def test_a_stage_name_must_be_known() -> None:
    with pytest.raises(ValueError, match="'traec' is not a stage"):
        Stage(name="traec", run=_add(1))


def _hold(megabytes: int, seconds: float):
    """A stage that allocates (and touches) ``megabytes`` MiB, holds them, then frees them."""

    def run(state: tuple[int, ...]) -> tuple[int, ...]:
        block = np.ones(megabytes * 2**20, dtype=np.uint8)
        time.sleep(seconds)
        del block
        return state

    return run


def test_each_stage_reports_its_own_peak_memory_and_a_second_run_carries_them_on() -> None:
    if resident() is None:
        pytest.skip("no /proc: the system does not report resident memory")
    first = run_stages((Stage(name="resolve", run=_add(1)),), ())
    stages = (
        Stage(name="load", detail="m", run=_hold(300, 0.1)),  # freed before the stage ends
        Stage(name="trace", detail="a.onnx", run=_add(2)),
    )
    start = resident()
    ran = run_stages(stages, first.state, done=first.done, memory=first.memory)
    assert list(ran.memory) == ["resolve", "load:m", "trace:a.onnx"]
    assert ran.memory["load:m"] >= start + 300 * 2**20 * 0.95  # the block was seen although gone at the end
    assert ran.memory["trace:a.onnx"] < ran.memory["load:m"] - 200 * 2**20  # a stage's own peak, not the process's
    assert ran.memory["trace:a.onnx"] >= resident() * 0.9


def test_a_brief_new_peak_is_exact_from_the_high_water_mark() -> None:
    """A spike shorter than the sampling interval is still seen when it is the process's new peak."""
    if high_water() is None:
        pytest.skip("no /proc: the system does not report resident memory")
    spike = (high_water() - resident()) // 2**20 + 200  # above the process's peak so far
    if spike > 1024:
        pytest.skip(f"this process peaked {spike - 200} MiB above its size now: a new peak would take too much memory")
    with watch_memory(every=3600.0) as peak:  # the thread never samples: only the high-water mark can see it
        _hold(spike, 0.0)(())
    assert peak() >= high_water() - 2**20 and peak() >= resident() + 150 * 2**20


def _job(model_type: str, task: str) -> _Job:
    from onnxspec.pieces.spec import bind
    from tests.tiny import CONFIGS

    spec = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
    resolved = _Resolved(spec=spec, source=None, backend=Backend.TORCHSCRIPT, files=plan(spec))
    return _Job(request=_request(), resolved=resolved, workdir="/nowhere")


def _request() -> _Request:
    """A request with every argument left out (the stage tuple reads only the plan)."""
    fields = {f.name: None for f in attrs.fields(_Request)}
    return _Request(**{**fields, "output_dir": "out", "shapes": Shapes(), "dtypes": DTypes(), "seed": 0, "start": 0.0})


def test_an_encoder_exports_in_one_graph() -> None:
    stages = export_stages(_job("bert", "text-classification"))
    assert stages[0].name == "load"
    assert [s.where for s in stages[1:]] == [
        "dummies (model.onnx)",
        "trace (model.onnx)",
        "check (model.onnx)",
        "validate (model.onnx)",
        "write",
    ]


def test_a_seq2seq_with_past_export_has_three_graphs_and_a_merged_decoder() -> None:
    job = _job("t5", "text2text-generation-with-past")
    stages = export_stages(job)
    files = [g.filename for g in job.resolved.files if not g.kind.is_merged]
    assert files == ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"]
    assert [(m.filename, [b.filename for b in m.branches]) for m in job.resolved.merges] == [
        ("decoder_model_merged.onnx", ["decoder_model.onnx", "decoder_with_past_model.onnx"]),
    ]
    assert [s.where for s in stages[1:]] == [
        *(f"{n} ({f})" for f in files for n in ("dummies", "trace", "check", "validate")),
        "trace (decoder_model_merged.onnx)",
        "check (decoder_model_merged.onnx)",
        "validate (decoder_model_merged.onnx)",
        "write",
    ]
    assert {s.name for s in stages} == set(STAGES) - {"resolve"}


def test_an_export_reports_each_stage_s_peak_memory_in_its_report_file(tmp_path) -> None:
    import json

    from onnxspec.pipeline.core import export
    from tests.tiny import tiny_model

    if resident() is None:
        pytest.skip("no /proc: the system does not report resident memory")
    seen: list[str] = []
    report = export(tiny_model("bert", "feature-extraction"), tmp_path / "out", task="feature-extraction",
                    progress=lambda stage, detail: seen.append(f"{stage}:{detail}" if detail else stage))
    assert list(report.stage_memory) == seen and all(v > 2**20 for v in report.stage_memory.values())
    with open(tmp_path / "out" / "onnxspec_report.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["stage_memory"] == report.stage_memory
    assert [g["float64_reference"] for g in written["graphs"]] == ["streamed"]  # how the float64 run was made
