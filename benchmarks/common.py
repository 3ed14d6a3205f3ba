"""Shared helpers of the benchmark scripts: paths, child processes measured one by one, statistics.

Nothing here imports torch: the orchestrator stays small so that every heavy step runs in a
child process whose wall time and peak RSS are measured on their own (``os.wait4``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.environ.get("ONNXSPEC_BENCH_WORK") or os.path.join(HERE, ".work")
"""Model folders, outputs and logs (override with ONNXSPEC_BENCH_WORK, as the smoke test does)."""
PROJECT_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PROJECT_CLI = os.path.join(ROOT, ".venv", "bin", "onnxspec")

ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every measured child runs in: offline, no hub, same for both sides."""
    env = dict(os.environ)
    env.update(ENV)
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


class ChildResult:
    """What one measured child process did: exit code, wall seconds, peak RSS bytes, output."""

    __slots__ = ("returncode", "seconds", "peak_rss", "stdout", "stderr")

    def __init__(self, returncode: int, seconds: float, peak_rss: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.seconds = seconds
        self.peak_rss = peak_rss
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_json(self) -> dict[str, Any]:
        """The last line of stdout that is JSON (how workers hand back their numbers)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith(("{", "[")):
                return json.loads(line)
        raise ValueError(f"no JSON line in the child's output; stderr ends with:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        return "\n".join((self.stderr or self.stdout).strip().splitlines()[-lines:])


def run_child(argv: Sequence[str], *, cwd: str = ROOT, env: Mapping[str, str] | None = None, timeout: float = 3600) -> ChildResult:
    """Run ``argv`` to completion; its own wall time and peak RSS (``wait4``: this child and the
    children it waited for), with output captured to files so large logs cannot block it."""
    out_path = os.path.join(WORK, "logs", f"child-{os.getpid()}-{time.monotonic_ns()}")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path + ".out", "w+") as out, open(out_path + ".err", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env or child_env()), stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = ChildResult(proc.returncode, seconds, usage.ru_maxrss * 1024, out.read(), err.read())
    os.remove(out_path + ".out")
    os.remove(out_path + ".err")
    return result


def summary(values: Sequence[float]) -> dict[str, Any]:
    """min / median / max of the runs, and the runs themselves."""
    if not values:
        return {"min": None, "median": None, "max": None, "runs": []}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "runs": list(values),
    }


def ratio(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, Any]:
    """Ratio of medians (ours / baseline) and the spread of the per-run paired ratios.

    Runs are interleaved, so run ``i`` of each side saw the same machine load; the paired
    ratios show how much that load moved the comparison.
    """
    if not ours or not theirs:
        return {"median_ratio": None, "paired": summary([])}
    paired = [a / b for a, b in zip(ours, theirs) if b]
    return {"median_ratio": statistics.median(ours) / statistics.median(theirs), "paired": summary(paired)}


def target(value: float | None, limit: float, *, unit: str = "x") -> dict[str, Any]:
    """MET when ``value <= limit``; else MISSED, with how far over the limit it is."""
    if value is None:
        return {"limit": limit, "value": None, "status": "NOT MEASURED", "by": None}
    met = value <= limit
    return {
        "limit": limit,
        "value": value,
        "status": "MET" if met else "MISSED",
        "by": None if met else f"{value - limit:.2f}{unit} over ({(value / limit - 1) * 100:.0f}% above the limit)",
    }


def machine() -> dict[str, Any]:
    """The machine the numbers come from: cores, memory, CPU model, OS, load at the start."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": mem,
        "memory_gib": round(mem / 2**30, 1),
        "cpu": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"
