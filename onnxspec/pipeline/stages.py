"""Stages as values: a named step of work, and one runner that runs a sequence of them.

A :class:`Stage` is a frozen record: a ``name`` (one of the pipeline's :data:`STAGES`), a
``detail`` (the file a per-graph stage works on, or what is loaded) and ``run``, a function
from a state to the next state. :func:`run_stages` runs a tuple of them in order and is the one
place that knows what a stage is:

- before a stage runs it reports ``progress(name, detail)``;
- after the stage's work it calls the ``fault(name, detail)`` test seam (an exception raised
  there is a failure of that stage);
- a :class:`~onnxspec.errors.TraceError` (no backend could trace a graph) is put in its
  place: the stage and the stages done are added to it;
- a stage that raises anything but an :class:`~onnxspec.errors.OnnxSpecError` (those already
  say what went wrong and how to fix it) becomes an :class:`~onnxspec.errors.ExportError` that
  names the stage (``trace (model.onnx)``), the stages done before it (``load:my-bert``) and
  chains the cause; a full disk says so and how to fix it;
- it measures the process's peak resident memory (RSS) during each stage
  (:func:`watch_memory`) and returns it with the last state and the stages done (a
  :class:`Ran`), so a second run can carry on where the first stopped (``done=``,
  ``memory=``), as the pipeline does once the plan is known.

The state is whatever the caller chooses; the pipeline's is a frozen record, so a stage is a
pure step from one record to the next and what each stage needs and adds is visible in its
signature. Modelled on onnx-ir's pass manager (passes are values run by ``Sequential``, a
failure names the pass) and on optax's ``chain`` (small steps composed as a sequence).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

import attrs

from onnxspec.errors import NO_SPACE, ExportError, OnnxSpecError, TraceError

__all__ = ["STAGES", "Fault", "Progress", "Ran", "Stage", "high_water", "resident", "run_stages", "watch_memory"]

STAGES = ("resolve", "load", "dummies", "trace", "check", "validate", "write")
"""The stage names of an export, in the order they first run (the per-graph ones repeat)."""

Progress = Callable[[str, str], None]
"""Called as ``progress(stage, detail)`` before each stage runs (the command line's display)."""

Fault = Callable[[str, str], None]
"""Test seam: called as ``fault(stage, detail)`` at the end of every stage's work (before the
stage counts as done); an exception raised there behaves exactly like a failure of that stage.
Production code never passes one."""

S = TypeVar("S")


def _known_stage(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in STAGES:
        raise ValueError(f"Stage.{attribute.name}: {value!r} is not a stage; expected one of {', '.join(STAGES)}")


@attrs.frozen(kw_only=True)
class Stage(Generic[S]):
    """One named step: ``run(state) -> state``, reported as ``name (detail)``."""

    name: str = attrs.field(validator=_known_stage)
    run: Callable[[S], S]
    detail: str = ""

    @property
    def where(self) -> str:
        """How a failure names the stage: ``trace (model.onnx)``, or ``resolve``."""
        return f"{self.name} ({self.detail})" if self.detail else self.name

    @property
    def label(self) -> str:
        """How the stages done are listed: ``load:my-bert``, or ``resolve``."""
        return f"{self.name}:{self.detail}" if self.detail else self.name


@attrs.frozen(kw_only=True)
class Ran(Generic[S]):
    """What a run of stages ended with: the last state and the stages done, in order."""

    state: S
    done: tuple[str, ...]
    memory: Mapping[str, int] = attrs.field(factory=dict, converter=dict)
    """The process's peak resident bytes during each stage done, by the stage's label
    (:attr:`Stage.label`); empty where the system does not report memory (no ``/proc``)."""


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_SECONDS = 0.01
"""How often :func:`watch_memory` reads the resident size while a stage runs."""


def resident() -> int | None:
    """The process's resident bytes now (``/proc/self/statm``), or ``None`` without ``/proc``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def high_water() -> int | None:
    """The process's peak resident bytes so far (``VmHWM``), or ``None`` without ``/proc``."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def watch_memory(every: float = SAMPLE_SECONDS) -> Iterator[Callable[[], int | None]]:
    """The process's peak resident bytes while the ``with`` block runs: yields a function that
    returns it (``None`` where the system does not report memory), valid once the block is left.

    Two sources, so that the figure is exact where it matters and close elsewhere:

    - the kernel's high-water mark (``VmHWM``): when it rose during the block, the block set a
      new peak for the process, and that mark is the block's exact peak, however briefly the
      memory was held;
    - otherwise a thread samples the resident size every ``every`` seconds (and once at either
      end): a lower bound of the block's peak that misses only spikes shorter than the interval,
      below the process's peak.

    The high-water mark is only read, never reset (writing ``5`` to ``/proc/self/clear_refs``
    would reset it per stage, but it would also erase the process's peak for every outside
    observer: ``getrusage``, ``wait4``, ``/usr/bin/time`` would then see the last stage's peak).
    """
    before = high_water()
    start = resident()
    if before is None or start is None:
        yield lambda: None
        return
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            now = resident()
            if now is not None and now > peak[0]:
                peak[0] = now

    thread = threading.Thread(target=sample, name="onnxspec-memory", daemon=True)
    thread.start()
    result: list[int | None] = [None]
    try:
        yield lambda: result[0]
    finally:
        stop.set()
        thread.join()
        end, after = resident(), high_water()
        sampled = max(peak[0], end or 0)
        result[0] = after if after is not None and after > before else sampled


def _failure(stage: Stage[S], done: tuple[str, ...], e: Exception) -> ExportError:
    """The :class:`ExportError` for ``e`` raised in ``stage`` after ``done``."""
    if isinstance(e, OSError) and e.errno in NO_SPACE:
        return ExportError(
            stage.where,
            done,
            f"no space left on the device ({e}); nothing was written to the output folder: free some space "
            "or choose an output folder on another disk",
        )
    return ExportError(stage.where, done, f"{type(e).__name__}: {e}")


def run_stages(
    stages: Sequence[Stage[S]],
    state: S,
    *,
    progress: Progress | None = None,
    fault: Fault | None = None,
    done: tuple[str, ...] = (),
    memory: Mapping[str, int] = {},
) -> Ran[S]:
    """Run ``stages`` in order from ``state``; return the last state, the stages done and the
    peak resident bytes during each (:func:`watch_memory`).

    ``done`` lists stages an earlier run finished (they are named in a failure's message) and
    ``memory`` their peaks (carried into the result). An :class:`OnnxSpecError` raised by a
    stage propagates unchanged; any other exception becomes an :class:`ExportError` naming the
    stage and the stages done, chained to it.
    """
    peaks = dict(memory)
    for stage in stages:
        if progress is not None:
            progress(stage.name, stage.detail)
        try:
            with watch_memory() as peak:
                state = stage.run(state)
                if fault is not None:
                    fault(stage.name, stage.detail)
        except TraceError as e:  # raised by a graph's trace without its place: put it there
            raise (e.located(stage.where, done) if not e.stage else e) from (e.__cause__ or e)
        except OnnxSpecError:
            raise
        except Exception as e:
            raise _failure(stage, done, e) from e
        done = (*done, stage.label)
        if peak() is not None:
            peaks[stage.label] = peak()  # type: ignore[assignment]
    return Ran(state=state, done=done, memory=peaks)
