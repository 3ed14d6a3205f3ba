"""The benchmark scripts run end to end (smoke mode: one tiny model, one run, no Optimum peer),
so they cannot rot; the full benchmark is run by hand (benchmarks/README.md), never in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture()
def bench_common():
    sys.path.insert(0, BENCH)
    try:
        import common

        yield common
    finally:
        sys.path.remove(BENCH)


def test_ratio_and_target_arithmetic(bench_common) -> None:
    r = bench_common.ratio([2.0, 4.0, 6.0], [4.0, 4.0, 4.0])
    assert r["median_ratio"] == pytest.approx(1.0)
    assert r["paired"]["min"] == pytest.approx(0.5) and r["paired"]["max"] == pytest.approx(1.5)
    assert bench_common.target(0.5, 0.6)["status"] == "MET"
    missed = bench_common.target(0.9, 0.6)
    assert missed["status"] == "MISSED" and missed["by"].startswith("0.30x over (50%")
    assert bench_common.target(None, 1.0)["status"] == "NOT MEASURED"


def test_smoke_run_writes_every_measurement(tmp_path) -> None:
    python = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    env = {**os.environ, "ONNXSPEC_BENCH_WORK": str(tmp_path / "work")}
    out = tmp_path / "results"
    proc = subprocess.run(
        [python, os.path.join(BENCH, "run.py"), "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "latest.json").read_text())
    (name,) = results["e2e"]
    e2e = results["e2e"][name]["onnxspec"]
    assert e2e["errors"] == [] and e2e["seconds"]["median"] > 0 and e2e["peak_rss"]["median"] > 50 * 2**20
    assert results["inproc"][name]["onnxspec"]["details"][0]["passed"] is True
    floor = results["floor"][name]
    assert floor["raw_torch_onnx_export"]["median"] > 0 and floor["ratio_pipeline_vs_raw"]["median_ratio"] > 0
    graph = results["graph"][name]
    assert graph["nodes"]["onnxspec"] > 10
    assert all(row["onnxspec"]["median"] > 0 for row in graph["latency_ms"].values())
    assert results["memory"]["ok"] and results["memory"]["external_data"]["ok"]
    assert results["versions"]["project"]["onnxspec"]
    md = (out / "latest.md").read_text()
    assert "## Headline ratios" in md and name in md and "pipeline export without validation" in md
