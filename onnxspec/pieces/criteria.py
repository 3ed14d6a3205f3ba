"""Pass criteria: when is an output of the ONNX graph close enough to PyTorch's?

Two kinds of criterion, both frozen records:

* :class:`NoiseBound`, the default. The PyTorch module is run a second time in float64, which
  gives the exact value up to float64's own rounding. PyTorch's float32 (or float16) result
  differs from it by the rounding noise of the export dtype: ``noise = max|torch - float64|``.
  The ONNX graph computes the same function in the same dtype with other kernels and another
  order of operations, so its error ``max|onnx - float64|`` is of the same order. It passes
  when ``error <= factor * noise + floor * max|float64|``. The bound scales with the output and
  the model (large real logits have large noise, tiny random models have tiny noise), so it
  accepts rounding on real checkpoints and still refuses a graph that computes something else:
  a wrong graph's error does not shrink with the noise.
* The same bound at a shape set where the float64 run was not made (:class:`Calibration`): the
  noise the float64 run measured at another set stands for the noise here, and the graph is
  compared with PyTorch at the export dtype. A correct graph's error is then its own rounding
  plus PyTorch's, both of the order of the noise; a wrong graph's error is its mistake, as
  before.
* :class:`Tolerance`, a fixed element-wise bound ``|onnx - torch| <= atol + rtol * |torch|``,
  for outputs the user gives a tolerance (``with_tolerance``, ``--atol``), and the fallback of a
  :class:`NoiseBound` where no float64 reference could run (the model does not fit twice in
  memory, or it cannot run in float64).

:func:`judge` applies either to arrays and returns a :class:`Verdict`: the error, the bound it
was held to, the noise measured, and whether it passed. It is pure numpy, testable alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs
import numpy as np

from onnxspec.errors import SpecError

__all__ = ["Calibration", "Criterion", "DEFAULT_CRITERIA", "NoiseBound", "Tolerance", "Verdict", "judge"]


def _positive(inst: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
        raise SpecError(f"{type(inst).__name__}.{attribute.name} must be a positive number, got {value!r}")


def _non_negative(inst: object, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
        raise SpecError(f"{type(inst).__name__}.{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Tolerance:
    """Fixed element-wise criterion: ``|onnx - torch| <= atol + rtol * |torch|`` everywhere."""

    atol: float = attrs.field(validator=_positive)
    rtol: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True)
class NoiseBound:
    """Noise-calibrated criterion: ``max|onnx - f64| <= factor * max|torch - f64| + floor * max|f64|``.

    ``f64`` is the PyTorch module run in float64 on the same inputs; ``torch`` is PyTorch at
    the export dtype. ``fallback`` applies (against ``torch``) where no float64 run is possible.
    """

    factor: float = attrs.field(validator=_positive)
    floor: float = attrs.field(validator=_non_negative)
    fallback: Tolerance
    cap: float = attrs.field(default=2.0**-10, validator=_positive)
    """The bound never exceeds ``max(cap * max|f64|, tiny)``. Where PyTorch's own float error is that large
    the output is ill-conditioned at these inputs (a top-k or arg-max decided by a near tie: a
    float32 and a float64 run pick different queries), the noise says nothing about the graph,
    and a graph whose result differs by as much must fail."""
    tiny: float = attrs.field(default=2.0**-126, validator=_positive)
    """The smallest normal number of the export dtype: values below it are zero (or denormal) in
    that dtype, so the cap never goes below it (a tiny random model's activations can fade there)."""


Criterion = Tolerance | NoiseBound

DEFAULT_CRITERIA: Mapping[str, Criterion] = MappingProxyType(
    {
        # factor: onnxruntime's float32 kernels were measured at up to 18x PyTorch's own error
        # against float64 on correct graphs of real checkpoints (README, "How exports are
        # judged"); 64 leaves room for that spread, while wrong graphs measured 19x-1e6x the bound.
        # floor: 2**-20 of the output's magnitude, a few float32 ulps, for outputs PyTorch
        # happens to compute exactly (noise 0) where onnxruntime rounds once.
        # cap: 2**-10 (~1e-3) of the output's size; correct graphs measured at most 2e-4 (SmolLM2's
        # logits) and tiny random models below 1e-4.
        "fp32": NoiseBound(factor=64.0, floor=2.0**-20, fallback=Tolerance(atol=1e-4, rtol=1e-3), cap=2.0**-10),
        # float16: PyTorch's CPU float16 kernels round more than onnxruntime's (measured error /
        # noise of correct graphs: 0.5-3.0 on 19 tiny models, about 3 on gemma-3), so 16 is room
        # enough; 64 would let a 2% error pass on real caches.
        "fp16": NoiseBound(factor=16.0, floor=2.0**-9, fallback=Tolerance(atol=1e-2, rtol=1e-2), cap=2.0**-5, tiny=2.0**-14),
        "bf16": NoiseBound(factor=16.0, floor=2.0**-6, fallback=Tolerance(atol=5e-2, rtol=5e-2), cap=2.0**-3),
    }
)


@attrs.frozen(kw_only=True)
class Calibration:
    """PyTorch's float error on one output measured against float64 at another shape set
    (``noise = max|torch - f64|`` there), which :func:`judge` takes as the noise of a
    :class:`NoiseBound` at a set without a float64 run.

    The noise is carried over as it is, not scaled by the output's size: rounding errors are
    made on the intermediate values, whose sizes the weights set, not on the output (one logit
    near 0 at a set of one token still carries the rounding of the hidden states before it, and
    a cache's size is set by its past, copied unchanged). The set measured is the one with the
    most positions, so its maximum is the largest. Measured on tiny registry models (README, "Which
    shape set checks what"), the bound so made is a median 1.8x the one a float64 run at that set
    gives, and correct graphs reach at most 0.08 of it."""

    noise: float
    shape_set: str


@attrs.frozen(kw_only=True)
class Verdict:
    """The outcome of one comparison: ``passed`` is exactly ``error <= bound`` (NaN never passes)."""

    criterion: str  # "noise" (bound from float64 noise) or "tolerance" (fixed bound against torch)
    reference: str  # "float64", or the export dtype's torch result ("torch"; with "noise", the noise was scaled from another set)
    error: float  # max |onnx - reference| (tolerance: the element closest to its bound)
    bound: float  # the error allowed
    noise: float  # max |torch - float64|, or its estimate from a Calibration; NaN when neither
    scale: float = float("nan")  # max |reference|: the output's size, which the floor and the cap scale with
    max_abs: float  # max |onnx - torch|, whatever the criterion
    max_rel: float  # max |onnx - torch| / |torch|
    passed: bool
    note: str = ""


def _tolerance(expected: np.ndarray, got: np.ndarray, tol: Tolerance, max_abs: float, max_rel: float, noise: float, note: str) -> Verdict:
    diff = np.abs(got - expected)
    allowed = tol.atol + tol.rtol * np.abs(expected)
    worst = int(np.argmax(diff / allowed))
    error, bound = float(diff.flat[worst]), float(allowed.flat[worst])
    return Verdict(
        criterion="tolerance", reference="torch", error=error, bound=bound, noise=noise,
        max_abs=max_abs, max_rel=max_rel, passed=bool(error <= bound), note=note,
    )


def judge(
    expected: np.ndarray,
    got: np.ndarray,
    criterion: Criterion,
    reference: np.ndarray | None = None,
    *,
    no_reference: str = "",
    calibration: Calibration | None = None,
) -> Verdict:
    """Judge ``got`` (onnxruntime) against ``expected`` (PyTorch at the export dtype).

    Arrays are the compared elements only, same shape, finite. ``reference`` is PyTorch in
    float64 at the same inputs, or ``None``: then a :class:`NoiseBound` with a ``calibration``
    (the noise measured at another set) judges ``|got - expected|`` against the bound of that
    noise (the floor and cap scaled by ``max|expected|``), and without one falls back to its
    fixed tolerance (``no_reference`` says why).

    >>> x = np.array([10.0, -3.0])
    >>> judge(x, x + 1e-5, NoiseBound(factor=64, floor=0, fallback=Tolerance(atol=1e-4)), x + 1e-6).passed
    False
    >>> judge(x, x + 1e-5, NoiseBound(factor=64, floor=0, fallback=Tolerance(atol=1e-4)), x + 1e-6, ).error < 1e-5
    True
    """
    exp = expected.astype(np.float64, copy=False)
    act = got.astype(np.float64, copy=False)
    diff = np.abs(act - exp)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(exp), 1e-12)).max()) if diff.size else 0.0
    if diff.size == 0:
        return Verdict(criterion="none", reference="torch", error=0.0, bound=0.0, noise=float("nan"),
                       max_abs=0.0, max_rel=0.0, passed=True)
    if isinstance(criterion, Tolerance):
        noise = float(np.abs(exp - reference).max()) if reference is not None else float("nan")
        return _tolerance(exp, act, criterion, max_abs, max_rel, noise, "")
    if reference is None and calibration is None:
        return _tolerance(exp, act, criterion.fallback, max_abs, max_rel, float("nan"), no_reference or "no float64 reference")
    if reference is None:  # the noise measured at another set (see Calibration)
        scale = float(np.abs(exp).max())
        noise = calibration.noise
        error, against, note = max_abs, "torch", f"noise measured in float64 at {calibration.shape_set}"
    else:
        ref = reference.astype(np.float64, copy=False)
        noise = float(np.abs(exp - ref).max())
        error = float(np.abs(act - ref).max())
        scale = float(np.abs(ref).max())
        against, note = "float64", ""
    bound = criterion.factor * noise + criterion.floor * scale
    ceiling = max(criterion.cap * scale, criterion.tiny)
    if bound > ceiling:
        bound = ceiling
        note = "; ".join(filter(None, [note, f"bound capped at {criterion.cap:.3g} x the output's size: PyTorch's own float "
                                       "error is that large, so the output is ill-conditioned at these inputs"]))
    return Verdict(
        criterion="noise", reference=against, error=error, bound=bound, noise=noise, scale=scale,
        max_abs=max_abs, max_rel=max_rel, passed=bool(error <= bound), note=note,
    )
