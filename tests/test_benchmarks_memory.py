"""benchmarks/memory.py's memory-group section (``--limits``) and its worker: a run in a limited
cgroup completes or is OOM-killed as the limit says, and the rendered table names the smallest
limit each tool completed in. The real runs (llama-1b, gemma-3-270m, Optimum) are by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.tiny import tiny_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
GROUPS = "/sys/fs/cgroup/memory"


@pytest.fixture()
def memory_bench():
    """benchmarks/memory.py as a module; the import path it extends (for its sibling scripts) is restored after."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("benchmarks_memory", os.path.join(BENCH, "memory.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = saved


def _run(tool: str, fraction: float, completed: bool, outcome: str) -> dict:
    return {"tool": tool, "model": "m", "fraction": fraction, "limit": int(fraction * 2**30), "weight_bytes": 2**30,
            "completed": completed, "outcome": outcome, "tail": ["  ✓ trace     model.onnx   1.0s"], "seconds": 10.0, "cpu_seconds": 8.0, "peak_rss": 2**29,
            "peak_rss_anon": 2**28, "peak_rss_file": 2**28, "max_usage_in_bytes": 2**29, "failcnt": 3, "major_faults": 7}


def test_render_names_the_smallest_limit_each_tool_completes_in(memory_bench) -> None:
    runs = [_run("onnxspec", 0.5, False, "OOM-killed in the group"), _run("onnxspec", 1.5, True, "completed, validation passed"),
            _run("onnxspec", 1.0, True, "completed, validation passed"), _run("optimum", 1.0, False, "OOM-killed in the group")]
    lines = memory_bench.render_limits({"date": "d", "commit": "c", "runs": {str(k): r for k, r in enumerate(runs)}})
    text = "\n".join(lines)
    assert "- onnxspec: completes from 1x (1.00 GiB)" in text
    assert "- optimum: completed under none of these limits" in text
    assert "| onnxspec | 0.5x = 0.50 GiB | OOM-killed in the group (last stage done: trace) |" in text


def test_worker_samples_each_stage(tmp_path) -> None:
    folder = tiny_folder("llama", "text-generation-with-past", tmp_path / "model")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "memory_worker.py"), folder, "text-generation-with-past", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["passed"] is True
    assert {"imports", "trace:model.onnx", "validate:model.onnx (onnxruntime)", "after export"} <= set(got["stages"])
    assert set(got["peaks"]) <= set(got["stages"])  # a stage shorter than the 20 ms sampling period may have no sample
    for peak in got["peaks"].values():
        assert 0 < peak["RssAnon"] <= peak["VmRSS"] and peak["RssFile"] <= peak["VmRSS"]


def _can_make_groups() -> bool:
    try:
        os.makedirs(os.path.join(GROUPS, "onnxspec-test-probe"), exist_ok=True)
        os.rmdir(os.path.join(GROUPS, "onnxspec-test-probe"))
        return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not _can_make_groups(), reason="needs a writable cgroup v1 memory hierarchy (root)")
def test_limited_export_completes_or_is_oom_killed(memory_bench, tmp_path) -> None:
    folder = tiny_folder("llama", "text-generation-with-past", tmp_path / "model")
    weights = 2**30  # a stand-in size: the limits below are 1 GiB (room enough) and 150 MiB (less than the imports)
    done = memory_bench.limited("onnxspec", "tiny", folder, weights, 1.0, timeout=300)
    assert done["completed"] and done["outcome"] == "completed, validation passed", done["tail"]
    assert 0 < done["max_usage_in_bytes"] <= weights and done["oom_kill"] == 0
    killed = memory_bench.limited("onnxspec", "tiny", folder, weights, 0.15, timeout=300)
    assert not killed["completed"] and killed["outcome"] == "OOM-killed in the group", killed
    assert killed["oom_kill"] >= 1 and killed["failcnt"] > 0
    assert not os.path.exists(os.path.join(GROUPS, "onnxspec-memory-onnxspec-tiny-1x"))
