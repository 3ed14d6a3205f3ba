"""onnxspec as a user installs it, for the end-to-end CLI times: benchmarks/.work/onnxspec-venv.

The project's development venv (``.venv``) is not what a user runs: onnxspec is an editable install
there, so with ``PYTHONDONTWRITEBYTECODE`` set every onnxspec module is compiled from source on
each CLI start, and the ``gguf`` and ``segmentation`` extras put accelerate and scipy beside
transformers, which then imports them with its modeling code (about 0.5 s of CPU a start, measured
on a tiny BERT). Optimum's side runs in a venv holding only what ``pip install optimum-onnx`` gives
(:mod:`peer`), so onnxspec's side runs the same way: ``pip install <checkout>`` (not editable, so
pip byte-compiles it) with the core dependencies only, at the versions the development venv has
(its ``pip freeze`` is the constraints file), torch first and pinned.

The venv is made once; onnxspec itself is reinstalled from the working tree on every
:func:`ensure`, so the CLI measured is the code being measured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from common import PROJECT_PYTHON, ROOT, WORK

VENV = os.path.join(WORK, "onnxspec-venv")
PYTHON = os.path.join(VENV, "bin", "python")
CLI = os.path.join(VENV, "bin", "onnxspec")
TORCH = "torch==2.13.0"
_STAMP = os.path.join(VENV, ".benchmark-installed")


def _constraints() -> str:
    """The development venv's package versions as a pip constraints file (torch and onnxspec left out)."""
    frozen = subprocess.run([PROJECT_PYTHON, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout
    keep = [line for line in frozen.splitlines() if "==" in line and not line.lower().startswith(("torch==", "onnxspec=="))]
    path = os.path.join(WORK, "onnxspec-venv-constraints.txt")
    with open(path, "w") as f:
        f.write("\n".join(keep) + "\n")
    return path


def ensure() -> str:
    """Make the venv if missing, reinstall onnxspec from the checkout into it, and return its CLI."""
    pip = [PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = _constraints()
    with open(constraints) as f:
        want = TORCH + "\n" + f.read()
    try:
        with open(_STAMP) as f:
            fresh = f.read() != want or not os.path.exists(CLI)
    except OSError:
        fresh = True
    if fresh:
        print(f"creating the installed-onnxspec venv at {VENV} (a few minutes)", file=sys.stderr, flush=True)
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([*pip, TORCH], check=True)
        subprocess.run([*pip, "-c", constraints, ROOT], check=True)
        with open(_STAMP, "w") as f:
            f.write(want)
    else:
        subprocess.run([*pip, "--no-deps", "--force-reinstall", ROOT], check=True)
    return CLI


if __name__ == "__main__":
    print(ensure())
