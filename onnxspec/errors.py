"""Every exception onnxspec raises.

Each error names what is wrong (the spec, the field, the stage), what was expected and what was
got, and the fix when one is known. User errors derive from :class:`OnnxSpecError`; the command
line prints them without a traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from typing import Any

NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
"""The errno values of a full disk or an exhausted quota: a write that fails with one is reported as such."""


class OnnxSpecError(Exception):
    """Base of every error raised on purpose by onnxspec."""


class SpecError(OnnxSpecError, ValueError):
    """A spec or one of its pieces contradicts itself or holds an invalid value."""


class ConfigError(OnnxSpecError, ValueError):
    """A model config lacks fields a spec needs, or holds unusable values."""


class UnknownNameError(OnnxSpecError, KeyError):
    """An unknown model type, task or option; carries close matches."""

    def __init__(self, what: str, name: str, known: Iterable[str], hint: str = "") -> None:
        self.what, self.name, self.known = what, name, sorted(set(known))
        self.suggestions = close_matches(name, self.known)
        msg = f"unknown {what} {name!r}."
        if self.suggestions:
            msg += f" Did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
        if hint:
            msg += f" {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class UnsupportedTaskError(OnnxSpecError, ValueError):
    """The model type exists but does not support the task asked for."""


class ModelLoadError(OnnxSpecError, OSError):
    """A model folder is missing, not a model, corrupt, or needs remote code."""


class OutputDirError(OnnxSpecError, OSError):
    """The output folder cannot be used (exists and is not empty, is a file, is read-only)."""


class ExportError(OnnxSpecError, RuntimeError):
    """A pipeline stage failed; names the stage, the stages that ran, and chains the cause."""

    def __init__(self, stage: str, done: tuple[str, ...], message: str, report: Any = None) -> None:
        self.stage, self.done, self.report = stage, done, report
        ran = ", ".join(done) if done else "none"
        super().__init__(f"stage {stage!r} failed (stages done: {ran}): {message}")


class BackendError(OnnxSpecError, RuntimeError):
    """One torch exporter failed on one graph: ``backend``, a one-line ``reason``, and in
    ``details`` everything the exporter said (its exception in full, the IR dump TorchScript
    prints on failure), kept for ``--debug`` and never printed otherwise."""

    def __init__(self, backend: str, reason: str, details: str = "") -> None:
        self.backend, self.reason, self.details = backend, reason, details
        super().__init__(f"the {backend} exporter failed: {reason}")


class TraceError(ExportError):
    """No backend could trace a graph: names the graph, each backend tried with its one-line
    reason (in the order tried) and the fix; ``details`` holds the exporters' full output.

    Raised by the ``trace`` stage without its place (``stage`` and ``done`` empty);
    :func:`onnxspec.pipeline.stages.run_stages` puts it in place with :meth:`located`.
    """

    def __init__(
        self,
        who: str,
        graph: str,
        failures: tuple[BackendError, ...],
        fix: str,
        stage: str = "",
        done: tuple[str, ...] = (),
    ) -> None:
        self.who, self.graph, self.failures, self.fix = who, graph, failures, fix
        self.details = "\n".join(f"--- the {f.backend} exporter on {graph} ---\n{f.details or f.reason}" for f in failures)
        if len(failures) == 1:
            message = f"{who}: the {failures[0].backend} exporter cannot trace {graph}: {failures[0].reason}; {fix}"
        else:
            tried = "".join(f"\n  - {f.backend}{' (tried next)' if k else ''}: {f.reason}" for k, f in enumerate(failures))
            message = f"{who}: no exporter can trace {graph}:{tried}\n{fix}"
        super().__init__(stage, done, message)
        if not stage:  # not yet placed: the message without the stage prefix
            self.args = (message,)

    def located(self, stage: str, done: tuple[str, ...]) -> TraceError:
        """The same failure, placed in ``stage`` after ``done``."""
        return TraceError(self.who, self.graph, self.failures, self.fix, stage, done)


class ValidationError(OnnxSpecError, AssertionError):
    """The exported graph disagrees with PyTorch; carries the full validation report."""

    def __init__(self, message: str, report: Any = None) -> None:
        self.report = report
        super().__init__(message)


def close_matches(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names of ``known`` that look like ``name`` (for "did you mean" hints).

    >>> close_matches("text-clasification", ["text-classification", "fill-mask"])
    ['text-classification']
    """
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
