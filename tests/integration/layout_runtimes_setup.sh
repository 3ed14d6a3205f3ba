#!/usr/bin/env bash
# Set up the runtimes test_layout_runtimes.py loads layouts with (once; nothing goes into .venv):
#   benchmarks/.work/genai-venv        python 3.11 venv with onnxruntime-genai (its own onnxruntime)
#   benchmarks/.work/transformers-js   node project with @huggingface/transformers (onnxruntime-node's
#                                      CPU binaries ship in the package; its CUDA download is skipped)
# Needs python3.11, node >= 18 and npm (apt-get install -y nodejs npm).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=benchmarks/.work
if [ ! -x "$work/genai-venv/bin/python" ]; then
  python3.11 -m venv "$work/genai-venv"
fi
"$work/genai-venv/bin/pip" install -q --disable-pip-version-check onnxruntime-genai numpy
mkdir -p "$work/transformers-js"
cd "$work/transformers-js"
[ -f package.json ] || npm init -y >/dev/null
ONNXRUNTIME_NODE_INSTALL=skip ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --no-audit --no-fund @huggingface/transformers
