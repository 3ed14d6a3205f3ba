"""``python -m onnxspec``: the same command line as the ``onnxspec`` script."""

from __future__ import annotations

import sys

from onnxspec.cli import run

if __name__ == "__main__":
    sys.exit(run())
