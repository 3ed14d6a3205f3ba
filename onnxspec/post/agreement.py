"""How far a lossy transformation (int8, int4, fp16) may move a graph's outputs from PyTorch's.

A quantized graph cannot pass the export's own validation (:mod:`onnxspec.judge.validate`):
its error is the quantization's, orders of magnitude above float32 rounding. It is judged
instead by what a user of the model sees, measured against the PyTorch model the folder was
exported from, at the export's validation shape sets:

- **cosine**: the cosine similarity of each float output with PyTorch's, over the elements the
  attention mask keeps (one number per output and shape set);
- **top-1**: for ``logits``, the fraction of positions (rows of the last axis) whose arg-max is
  PyTorch's;
- **greedy**: for a decoder with a KV cache, the tokens greedy decoding picks over ``N`` steps,
  feeding the cache back, against PyTorch decoding the same prompts: for each prompt, the length
  of the prefix on which the two agree, over ``N`` (after a first divergence the two continue
  from different prefixes, so later matches mean nothing).

Each value is compared with a threshold of :class:`Thresholds`; one below it fails the result.
The functions on arrays are pure (numpy in, floats out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import numpy as np

from onnxspec.errors import SpecError

__all__ = [
    "DEFAULTS",
    "Measure",
    "Thresholds",
    "cosine_similarity",
    "greedy_agreement",
    "greedy_ids",
    "measure",
    "top1_agreement",
]


def _unit_interval(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"threshold {attribute.name}={value!r} must be between 0 and 1")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise SpecError(f"{attribute.name}={value!r} must be at least 1")


@attrs.frozen(kw_only=True)
class Thresholds:
    """The least agreement a lossy result must reach (see the module docstring)."""

    cosine: float = attrs.field(default=0.99, validator=_unit_interval)
    top1: float = attrs.field(default=0.9, validator=_unit_interval)
    greedy: float = attrs.field(default=0.75, validator=_unit_interval)
    greedy_steps: int = attrs.field(default=8, validator=_positive)


DEFAULTS: Mapping[str, Thresholds] = {
    "int8": Thresholds(top1=0.85),
    "int4": Thresholds(cosine=0.95, top1=0.7, greedy=0.5),
    "fp16": Thresholds(cosine=0.999, top1=0.95, greedy=0.9),
}
"""Default thresholds per lossy transformation (the README says where they come from)."""


@attrs.frozen(kw_only=True)
class Measure:
    """One agreement figure: ``metric`` (``cosine``, ``top1``, ``greedy``) of ``output`` of
    ``graph`` at ``shape_set``, its ``value``, the ``threshold`` and whether it is reached."""

    graph: str
    output: str
    shape_set: str
    metric: str
    value: float
    threshold: float
    compared: int
    passed: bool
    problem: str = ""


def cosine_similarity(expected: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity of two arrays of the same shape, flattened, computed in float64.

    Two all-zero arrays agree (1.0); one all-zero array against another does not (0.0).
    """
    a, b = np.asarray(expected, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    if a.shape != b.shape:
        raise SpecError(f"cosine similarity of arrays of different sizes: {a.size} and {b.size}")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def top1_agreement(expected: np.ndarray, got: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, int]:
    """The fraction of rows (vectors along the last axis) whose arg-max is the same in both, and
    the number of rows compared; ``keep`` (the shape of the arrays without their last axis)
    marks the rows to compare."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        raise SpecError(f"top-1 agreement of arrays of different shapes: {expected.shape} and {got.shape}")
    same = np.argmax(expected, axis=-1) == np.argmax(got, axis=-1)
    if keep is not None:
        same = same[np.asarray(keep, bool)]
    if same.size == 0:
        return 1.0, 0
    return float(np.mean(same)), int(same.size)


def greedy_agreement(expected: np.ndarray, got: np.ndarray) -> float:
    """Mean over rows of the length of the prefix on which two ``(batch, steps)`` token arrays
    agree, over ``steps``."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape or expected.ndim != 2:
        raise SpecError(f"greedy agreement needs two (batch, steps) arrays of the same shape, got {expected.shape} and {got.shape}")
    if expected.shape[1] == 0:
        return 1.0
    differ = expected != got
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), expected.shape[1])
    return float(np.mean(first / expected.shape[1]))


Step = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
"""One forward call of a decoder: its inputs by name to its outputs by name."""


def greedy_ids(
    step: Step,
    prompt: np.ndarray,
    empty_past: Mapping[str, np.ndarray],
    input_names: tuple[str, ...],
    steps: int,
    *,
    logits: str = "logits",
) -> np.ndarray:
    """Decode ``steps`` tokens greedily after ``prompt`` (``(batch, length)`` ids) with ``step``.

    The first call feeds the prompt and ``empty_past`` (cache inputs of past length 0), later
    calls the token picked and the previous call's ``present.*`` outputs as ``past_key_values.*``.
    ``attention_mask`` (all ones) and ``position_ids`` are fed when ``input_names`` holds them;
    any other input but the cache is refused. Returns the ``(batch, steps)`` ids picked.
    """
    from onnxspec.pieces.cache_names import is_cache_input, is_cache_output, to_past

    known = {"input_ids", "attention_mask", "position_ids"}
    other = [n for n in input_names if n not in known and not is_cache_input(n)]
    if other:
        raise SpecError(f"greedy decoding feeds input_ids, attention_mask, position_ids and the cache, not {other}")
    batch = prompt.shape[0]
    ids, past, done, picked = prompt, dict(empty_past), 0, []
    for _ in range(steps):
        feed: dict[str, np.ndarray] = {"input_ids": ids}
        if "attention_mask" in input_names:
            feed["attention_mask"] = np.ones((batch, done + ids.shape[1]), prompt.dtype)
        if "position_ids" in input_names:
            feed["position_ids"] = np.broadcast_to(np.arange(done, done + ids.shape[1], dtype=prompt.dtype), ids.shape).copy()
        feed.update(past)
        out = step({n: feed[n] for n in input_names})
        nxt = np.argmax(np.asarray(out[logits])[:, -1, :], axis=-1).astype(prompt.dtype)
        picked.append(nxt)
        done += ids.shape[1]
        ids = nxt[:, None]
        past = {to_past(k): np.asarray(v) for k, v in out.items() if is_cache_output(k)}
    return np.stack(picked, axis=1)


def measure(
    graph: str, output: str, shape_set: str, metric: str, value: float, threshold: float, compared: int
) -> Measure:
    """A :class:`Measure`, passed when ``value >= threshold`` (a NaN value fails)."""
    passed = bool(np.isfinite(value)) and value >= threshold
    problem = "" if passed else f"{metric} {value:.4f} is below the threshold {threshold:.4f}"
    return Measure(graph=graph, output=output, shape_set=shape_set, metric=metric, value=float(value), threshold=threshold,
                   compared=compared, passed=passed, problem=problem)
