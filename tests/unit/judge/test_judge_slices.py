"""Judging an output a slice at a time: the verdict of judging every compared element, without a
full-size copy of the output, its float64 reference or the masked elements."""

from __future__ import annotations

import tracemalloc

import attrs
import numpy as np
import pytest

from onnxspec.judge.validate import CHUNK, compare, judge_in_chunks
from onnxspec.pieces.axes import spec as tensor_spec
from onnxspec.pieces.criteria import Calibration, NoiseBound, Tolerance, judge


def _arrays(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's output, onnxruntime's (worst in a masked-out row, and worst among kept ones in
    the last slice), a float64 reference, and a mask of kept rows broadcast over the last axis."""
    rng = np.random.default_rng(1)
    expected = rng.standard_normal(shape).astype(np.float32)
    reference = expected.astype(np.float64) + rng.standard_normal(shape) * 1e-7
    got = (expected + rng.standard_normal(shape).astype(np.float32) * 1e-6).astype(np.float32)
    rows = np.ones(shape[:2], dtype=bool)
    rows[0, 0] = rows[1, :2] = False  # left padding: these positions are not compared
    got[0, 0, 3] += 1.0  # a wrong value where nothing is compared
    reference[1, 1, 5] += 1.0
    got[-1, -1, -1] += 2e-4
    return expected, got, reference, np.broadcast_to(rows[:, :, None], shape)


def _same(a: object, b: object) -> bool:
    """Every field equal, NaN equal to NaN (no reference: no noise)."""
    pairs = zip(attrs.astuple(a), attrs.astuple(b))
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y) for x, y in pairs)


@pytest.mark.parametrize("how", ["float64", "calibrated", "tolerance", "fallback"])
def test_masked_slices_give_the_verdict_of_judging_the_kept_elements(how: str) -> None:
    expected, got, reference, keep = _arrays((3, 5, 1001))
    noise = NoiseBound(factor=64, floor=2.0**-20, fallback=Tolerance(atol=1e-4, rtol=1e-3))
    criterion = Tolerance(atol=1e-5, rtol=1e-3) if how == "tolerance" else noise
    ref = reference if how in ("float64", "tolerance") else None
    calibration = Calibration(noise=3e-6, shape_set="large") if how == "calibrated" else None
    whole = judge(expected[keep], got[keep], criterion, None if ref is None else ref[keep], no_reference="none",
                  calibration=calibration)
    for chunk in (1000, 4096, 7, expected.size):
        sliced = judge_in_chunks(expected, got, criterion, ref, no_reference="none", chunk=chunk, calibration=calibration,
                                 keep=keep)
        assert _same(sliced, whole), chunk
    unmasked = judge(expected, got, criterion, ref, no_reference="none", calibration=calibration)
    assert unmasked.max_abs > 0.9 and whole.max_abs < 1e-3  # the mask matters: the test can tell


def test_compare_counts_and_reports_the_kept_elements_only() -> None:
    expected, got, reference, keep = _arrays((3, 5, 1001))
    output = tensor_spec("logits", {})
    criterion = NoiseBound(factor=64, floor=2.0**-20, fallback=Tolerance(atol=1e-4))
    check = compare("model.onnx", output, "large", expected, got, keep, criterion, reference)
    verdict = judge(expected[keep], got[keep], criterion, reference[keep])
    assert check.compared == int(keep.sum()) and check.passed == verdict.passed
    assert (check.error, check.bound, check.noise, check.max_abs) == (verdict.error, verdict.bound, verdict.noise, verdict.max_abs)


@pytest.mark.parametrize("side", ["onnxruntime", "PyTorch", "float64"])
def test_a_non_finite_value_is_found_in_any_slice(side: str) -> None:
    expected, got, reference, keep = _arrays((3, 5, 1001))
    target = {"onnxruntime": got, "PyTorch": expected, "float64": reference}[side]
    target[2, 4, 999] = np.nan  # kept, in the last slice
    output = tensor_spec("logits", {})
    criterion = NoiseBound(factor=64, floor=2.0**-20, fallback=Tolerance(atol=1e-4))
    check = compare("model.onnx", output, "large", expected, got, keep, criterion, reference)
    if side == "float64":  # judged against PyTorch by the fallback tolerance, and says why
        assert check.criterion == "tolerance" and check.reference == "torch" and "non-finite" in check.note
        assert check.problem == ""
    else:
        assert not check.passed and check.problem == f"{side} produced non-finite values"


def test_a_logits_sized_output_is_judged_without_a_full_size_copy() -> None:
    """Masked copies of the output and of its float64 reference would take 3x the output's
    float32 bytes; judged a slice at a time, what is allocated stays near a few slices'."""
    shape = (3, 16, 1 << 18)  # 12.6 M elements: 48 MiB in float32, 96 MiB its reference
    expected, got, reference, keep = _arrays(shape)
    output = tensor_spec("logits", {})
    criterion = NoiseBound(factor=64, floor=2.0**-20, fallback=Tolerance(atol=1e-4))
    tracemalloc.start()
    try:
        check = compare("model.onnx", output, "large", expected, got, keep, criterion, reference)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    verdict = judge(expected[keep], got[keep], criterion, reference[keep])
    assert check.compared == int(keep.sum()) and (check.error, check.bound, check.passed) == (verdict.error, verdict.bound, verdict.passed)
    slice_bytes = 8 * CHUNK
    assert peak < 6 * slice_bytes and peak < (expected.nbytes + got.nbytes + reference.nbytes) / 4, peak


def test_a_float64_output_held_as_its_residual_gives_back_the_float64_values() -> None:
    from onnxspec.judge.validate import Residual, _reference_part, residual

    expected, got, reference, keep = _arrays((3, 5, 1001))
    held = residual(expected, reference)
    assert isinstance(held, Residual) and held.delta.nbytes == reference.nbytes // 2
    back = _reference_part(held, slice(0, expected.size)).reshape(expected.shape)
    assert np.all(np.abs(back - reference) <= 2.0**-24 * np.abs(reference - expected) + 1e-15 * np.abs(reference))
    assert residual(reference, reference) is reference  # a float64 output of a float64 run: nothing to gain
    criterion = NoiseBound(factor=64, floor=2.0**-20, fallback=Tolerance(atol=1e-4))
    output = tensor_spec("logits", {})
    direct = compare("model.onnx", output, "large", expected, got, keep, criterion, reference)
    through = compare("model.onnx", output, "large", expected, got, keep, criterion, held)
    assert direct.passed == through.passed and direct.compared == through.compared and through.reference == "float64"
    for name in ("error", "noise", "bound", "scale"):
        assert abs(getattr(through, name) - getattr(direct, name)) <= 1e-6 * getattr(direct, name), name
    wrong = got.copy()
    wrong[2, 4, 7] += 1e-3  # a wrong value: caught through the residual as directly
    assert not compare("model.onnx", output, "large", expected, wrong, keep, criterion, held).passed
