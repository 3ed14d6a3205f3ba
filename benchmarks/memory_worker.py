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

KEYS = ("VmRSS", "RssAnon", "RssFile")


def _status() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in (*KEYS, "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def main() -> None:
    folder, task, out = sys.argv[1:4]
    peaks: dict[str, dict[str, int]] = {}
    current = ["imports"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _status()
            peak = peaks.setdefault(current[0], dict.fromkeys(KEYS, 0))
            for key in KEYS:
                peak[key] = max(peak[key], now[key])
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    import onnxruntime

    from onnxspec.pipeline.core import export

    opened = onnxruntime.InferenceSession.__init__

    def session(self: object, *args: object, **kwargs: object) -> None:
        current[0] = current[0].removesuffix(" (onnxruntime)") + " (onnxruntime)"
        opened(self, *args, **kwargs)  # type: ignore[arg-type]

    onnxruntime.InferenceSession.__init__ = session  # type: ignore[method-assign]

    def progress(stage: str, detail: str) -> None:
        current[0] = f"{stage}:{detail}" if detail else stage

    t0 = time.perf_counter()
    report = export(folder, out, task=task, overwrite=True, progress=progress)
    seconds = time.perf_counter() - t0
    current[0] = "after export"
    time.sleep(0.1)
    stop.set()
    thread.join()
    print(json.dumps({"seconds": seconds, "passed": report.passed, "peaks": peaks, "process_peak_rss": _status()["VmHWM"],
                      "report_stage_memory": dict(getattr(report, "stage_memory", {}) or {})}))


if __name__ == "__main__":
    main()
