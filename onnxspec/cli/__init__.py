"""The command line: ``onnxspec export``, ``models``, ``tasks``, ``describe``, ``inspect``
(:mod:`onnxspec.cli.commands`), and the reading of export folders (:mod:`onnxspec.cli.inspection`)."""

from onnxspec.cli.commands import main, run

__all__ = ["main", "run"]
