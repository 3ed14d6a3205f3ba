"""One validated export, in this process, with its resident memory sampled per stage (run by ``memory.py``).

    .venv/bin/python benchmarks/memory_worker.py MODEL_DIR TASK OUT_DIR

A thread reads ``/proc/self/status`` every 20 ms and keeps, per pipeline stage (the ``progress``
callback's labels), the peak of the resident set (``VmRSS``) and of its two parts: anonymous
memory (``RssAnon``: tensors, heaps) and file-backed pages (``RssFile``: memory-mapped
checkpoints and external data, libraries). The validation stage is split where onnxruntime
opens its session (``<stage> (onnxruntime)``): before it PyTorch's references run, after it
onnxruntime. Prints one JSON line: the export's seconds, whether it passed, the peaks per stage,
the process's high-water mark (``VmHWM``) and the pipeline's own ``ExportReport.stage_memory``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

KEYS = ("VmRSS", "RssAnon", "RssFile")


def _status() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in (*KEYS, "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def sampled_export(folder: str, task: str, out: str) -> dict[str, Any]:
    """One validated ``export(folder, out, task=task)`` with its resident memory sampled per stage:
    the export's seconds, whether it passed, the stages in the order they ran, the peaks per stage,
    the process's high-water mark and the pipeline's own ``ExportReport.stage_memory``."""
    peaks: dict[str, dict[str, int]] = {}
    order = ["imports"]
    current = ["imports"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _status()
            peak = peaks.setdefault(current[0], dict.fromkeys(KEYS, 0))
            for key in KEYS:
                peak[key] = max(peak[key], now[key])
            stop.wait(0.02)

    def enter(label: str) -> None:
        order.append(label)
        current[0] = label

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    import onnxruntime

    from onnxspec.pipeline.core import export

    opened = onnxruntime.InferenceSession.__init__

    def session(self: object, *args: object, **kwargs: object) -> None:
        if not current[0].endswith(" (onnxruntime)"):
            enter(current[0] + " (onnxruntime)")
        opened(self, *args, **kwargs)  # type: ignore[arg-type]

    onnxruntime.InferenceSession.__init__ = session  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        report = export(folder, out, task=task, overwrite=True, progress=lambda stage, detail: enter(f"{stage}:{detail}" if detail else stage))
        seconds = time.perf_counter() - t0
    finally:
        onnxruntime.InferenceSession.__init__ = opened  # type: ignore[method-assign]
    enter("after export")
    time.sleep(0.1)
    stop.set()
    thread.join()
    return {"seconds": seconds, "passed": report.passed, "stages": list(dict.fromkeys(order)), "peaks": peaks,
            "process_peak_rss": _status()["VmHWM"], "report_stage_memory": dict(getattr(report, "stage_memory", {}) or {})}


def main() -> None:
    folder, task, out = sys.argv[1:4]
    print(json.dumps(sampled_export(folder, task, out)))


if __name__ == "__main__":
    main()
