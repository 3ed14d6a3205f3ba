"""The peer: Optimum's ONNX exporter in its own virtual environment at benchmarks/.work/optimum-venv.

Optimum's exporter pins transformers below 4.58, so it can never share the project's venv
(transformers 5.x). The versions below are known to install and run on this machine; torch goes
first and pinned so that pip never pulls a CUDA build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from common import HERE

VENV = os.path.join(HERE, ".work", "optimum-venv")
PYTHON = os.path.join(VENV, "bin", "python")
CLI = os.path.join(VENV, "bin", "optimum-cli")
TORCH = "torch==2.13.0"
PACKAGES = ("optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "onnx==1.23.2", "onnxruntime==1.32.0")
_STAMP = os.path.join(VENV, ".benchmark-peer")


def ensure() -> str:
    """Create the peer venv if missing (idempotent) and return its python."""
    want = " ".join((TORCH, *PACKAGES))
    try:
        with open(_STAMP) as f:
            if f.read().strip() == want and os.path.exists(CLI):
                return PYTHON
    except OSError:
        pass
    print(f"creating the Optimum venv at {VENV} (a few minutes)", file=sys.stderr, flush=True)
    shutil.rmtree(VENV, ignore_errors=True)
    # `python3` on PATH, as a user would type it (it must have ensurepip; some system pythons lack it).
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", VENV], check=True)
    pip = [PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *PACKAGES], check=True)
    with open(_STAMP, "w") as f:
        f.write(want)
    return PYTHON


def versions() -> dict[str, str]:
    """Installed versions inside the peer venv."""
    code = (
        "import importlib.metadata as m, json, platform;"
        "print(json.dumps({p: m.version(p) for p in ('optimum-onnx','optimum','transformers','torch','onnx','onnxruntime')}"
        " | {'python': platform.python_version()}))"
    )
    out = subprocess.run([PYTHON, "-c", code], check=True, capture_output=True, text=True).stdout
    import json

    return json.loads(out)


if __name__ == "__main__":
    print(ensure())
    print(versions())
