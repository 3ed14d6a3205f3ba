"""Runs inside the Optimum venv: time ``main_export`` with its imports already done.

``python optimum_worker.py MODEL_DIR TASK OUT_DIR`` prints one JSON line with the seconds spent
inside ``main_export`` (load, export, validation, write), so import time is excluded: the first
call (``seconds``, which still pays lazy imports and torch's first-trace warm-up) and a second
call in the same process (``warm_seconds``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import warnings

warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

import onnxruntime  # noqa: E402,F401  (imported before the clock, as on the onnxspec side)
import transformers  # noqa: E402,F401
from optimum.exporters.onnx import main_export  # noqa: E402


def main() -> None:
    model, task, out = sys.argv[1:4]
    start = time.perf_counter()
    main_export(model_name_or_path=model, output=out, task=task, device="cpu", do_validation=True)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    main_export(model_name_or_path=model, output=out + "-warm", task=task, device="cpu", do_validation=True)
    warm_seconds = time.perf_counter() - start
    shutil.rmtree(out + "-warm", ignore_errors=True)
    print(json.dumps({"seconds": seconds, "warm_seconds": warm_seconds}))


if __name__ == "__main__":
    main()
