"""The pass criteria alone: pure numpy, no model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pieces.criteria import DEFAULT_CRITERIA, Calibration, NoiseBound, Tolerance, judge
from onnxspec.errors import SpecError

BOUND = NoiseBound(factor=64.0, floor=2.0**-20, fallback=Tolerance(atol=1e-4, rtol=1e-3))


def _exact_and_float32(seed: int, scale: float, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """A float64 value and the same value after float32 rounding (what PyTorch float32 gives)."""
    exact = np.random.default_rng(seed).standard_normal(n) * scale
    return exact, exact.astype(np.float32).astype(np.float64)


def test_rounding_noise_of_large_outputs_passes_where_a_fixed_atol_fails() -> None:
    """Logits of size ~30 carry float32 noise above 1e-4; an equally noisy graph is right."""
    exact, torch32 = _exact_and_float32(0, 30.0)
    noisy = exact + np.random.default_rng(1).uniform(-8, 8, exact.shape) * np.abs(torch32 - exact).max()
    v = judge(torch32, noisy, BOUND, exact)
    assert v.passed and v.criterion == "noise" and v.reference == "float64"
    assert v.noise > 0 and v.error <= 64 * v.noise
    assert not judge(torch32, noisy, Tolerance(atol=1e-6), exact).passed  # a fixed tight atol refuses it


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_a_wrong_value_fails_at_every_scale(scale: float) -> None:
    """A systematic error of 1e-3 relative to the output fails however large the output is."""
    exact, torch32 = _exact_and_float32(2, scale)
    wrong = exact.copy()
    wrong[17] += 1e-3 * scale
    v = judge(torch32, wrong, BOUND, exact)
    assert not v.passed and v.error > v.bound
    assert v.error == pytest.approx(1e-3 * scale, rel=1e-3)


def test_a_graph_exact_where_pytorch_is_exact_passes_with_the_floor() -> None:
    x = np.linspace(-2, 2, 101)
    assert judge(x, x, BOUND, x).passed  # noise 0, error 0
    one_ulp = x + np.spacing(np.float32(2.0))
    assert judge(x, one_ulp, BOUND, x).passed  # within the floor (a few float32 ulps of the scale)
    assert not judge(x, x + 1e-4, BOUND, x).passed


def test_without_a_float64_reference_the_fallback_tolerance_judges_and_says_why() -> None:
    x = np.array([1.0, 2.0, 3.0])
    v = judge(x, x + 5e-5, BOUND, None, no_reference="the model failed in float64")
    assert v.passed and v.criterion == "tolerance" and v.reference == "torch"
    assert v.note == "the model failed in float64" and math.isnan(v.noise)
    assert not judge(x, x + 1e-2, BOUND, None).passed


def test_tolerance_reports_the_element_closest_to_its_bound() -> None:
    expected = np.array([100.0, 0.0])
    got = np.array([100.05, 0.00009])
    v = judge(expected, got, Tolerance(atol=1e-4, rtol=1e-3))
    # 0.05 against 0.1001 is a ratio of 0.5; 9e-5 against 1e-4 is 0.9: the second is reported
    assert v.passed and v.error == pytest.approx(9e-5) and v.bound == pytest.approx(1e-4)
    assert v.max_abs == pytest.approx(0.05)


def test_empty_comparison_passes_trivially() -> None:
    e = np.zeros((0,))
    assert judge(e, e, BOUND, e).passed


@given(
    seed=st.integers(0, 2**16),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(0.01, 10.0),
)
def test_verdict_is_exactly_error_within_bound(seed: int, scale: float, shift: float) -> None:
    exact, torch32 = _exact_and_float32(seed, scale, 64)
    got = exact + shift * scale * 1e-6
    v = judge(torch32, got, BOUND, exact)
    assert v.passed == (v.error <= v.bound)
    assert v.bound == pytest.approx(64 * v.noise + 2.0**-20 * np.abs(exact).max())


def test_defaults_loosen_with_coarser_dtypes() -> None:
    f32, f16, b16 = (DEFAULT_CRITERIA[k] for k in ("fp32", "fp16", "bf16"))
    assert f32.floor < f16.floor < b16.floor
    assert f32.fallback.atol < f16.fallback.atol <= b16.fallback.atol


@pytest.mark.parametrize("field", ["factor", "floor"])
def test_noise_bound_rejects_bad_numbers(field: str) -> None:
    good = dict(factor=64.0, floor=1e-6, fallback=Tolerance(atol=1e-4))
    with pytest.raises(SpecError, match=f"NoiseBound.{field}"):
        NoiseBound(**{**good, field: -1.0})


def test_an_ill_conditioned_output_cannot_widen_the_bound_past_the_cap() -> None:
    """A near tie decided differently by float32 and float64 (a top-k of queries) makes PyTorch's
    own 'noise' as large as the output: the bound stops at cap x the output's size, so a graph
    that picks other boxes fails instead of hiding behind that noise."""
    exact = np.array([0.25, 0.5, 0.75, 1.0])
    torch32 = exact[::-1].copy()  # float32 chose the other query: 0.75 off
    onnx = np.array([0.9, 0.1, 0.3, 0.2])
    v = judge(torch32, onnx, BOUND, exact)
    assert v.bound == pytest.approx(2.0**-10 * 1.0) and "ill-conditioned" in v.note
    assert not v.passed
    assert judge(exact, exact, BOUND, exact).note == ""  # a well-conditioned output is not capped


def test_outputs_below_the_dtype_range_are_not_capped_to_nothing() -> None:
    """A tiny random model's activations can fade below float32's smallest normal: float32 says 0,
    float64 says 3e-50. Both onnxruntime and PyTorch are right for float32; the cap stops at tiny."""
    exact = np.full(8, 3e-50)
    zeros = np.zeros(8)
    v = judge(zeros, zeros, BOUND, exact)
    assert v.passed and v.error == pytest.approx(3e-50)
    assert not judge(zeros, zeros + 1e-30, BOUND, exact).passed  # above tiny, the cap still holds


def test_a_calibration_stands_in_for_float64_at_another_set() -> None:
    """At a set without a float64 run, the noise measured at another set bounds the graph's
    difference from PyTorch's float32; the floor and the cap follow the output's size here."""
    exact, torch32 = _exact_and_float32(3, 10.0)
    there = Calibration(noise=float(np.abs(torch32 - exact).max()), shape_set="large")
    here_exact, here32 = _exact_and_float32(4, 10.0, n=64)
    noisy = here32 + np.random.default_rng(5).uniform(-4, 4, here32.shape) * np.abs(here32 - here_exact).max()
    v = judge(here32, noisy, BOUND, None, calibration=there)
    assert v.passed and v.criterion == "noise" and v.reference == "torch" and "large" in v.note
    assert v.noise == there.noise and v.scale == pytest.approx(np.abs(here32).max())
    assert v.bound == pytest.approx(64 * there.noise + 2.0**-20 * v.scale)
    assert v.error == pytest.approx(np.abs(noisy - here32).max())
    wrong = here32.copy()
    wrong[7] += 1e-3 * 10.0  # 1e-3 of the output's size: far above 64 x its float32 noise
    assert not judge(here32, wrong, BOUND, None, calibration=there).passed


def test_a_calibrated_bound_is_capped_like_a_measured_one() -> None:
    ill = Calibration(noise=1.0, shape_set="large")  # PyTorch's float error as large as the output
    x = np.linspace(-1.0, 1.0, 50)
    v = judge(x, x + 2e-3, BOUND, None, calibration=ill)
    assert not v.passed and v.bound == pytest.approx(2.0**-10) and "capped" in v.note
