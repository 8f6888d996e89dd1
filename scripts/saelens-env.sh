#!/usr/bin/env bash
# Builds .venv-saelens: SAELens in its own virtual environment, for `molab bench sae` (SAELens
# training beside molab's trainer on the same cache) and tests/test_saelens_interop.py (SAELens
# loading molab's SAE files). Its own env, so that SAELens' pins (transformer-lens < 4 and what
# that brings) never move molab's packages.
#
# Versions: torch 2.13.0 (the CPU build molab's Makefile installs), sae-lens 6.54.12 (it resolved
# with transformer-lens 3.9.0 and transformers 5.25.0 in 2026-12).
# torch goes in first and stays pinned by a constraint, so sae-lens' resolver never pulls a
# multi-GB CUDA build. Idempotent: an env that already imports both at these versions is kept.
#
# Usage: bash scripts/saelens-env.sh   (from the repository root; PYTHON=python3.11 to choose)
set -euo pipefail

TORCH_VERSION=2.13.0
SAELENS_VERSION=6.54.12
PYTHON=${PYTHON:-python3}
ENV=${SAELENS_ENV:-.venv-saelens}
PY=$ENV/bin/python

cd "$(dirname "$0")/.."

if [ -x "$PY" ] && "$PY" - "$TORCH_VERSION" "$SAELENS_VERSION" 2>/dev/null <<'EOF'; then
import sys
from importlib.metadata import version
import torch
ok = torch.__version__.split("+")[0] == sys.argv[1] and version("sae-lens") == sys.argv[2]
sys.exit(0 if ok and torch.version.cuda is None else 1)
EOF
    echo "$ENV: torch $TORCH_VERSION and sae-lens $SAELENS_VERSION already installed"
    exit 0
fi

test -x "$PY" || "$PYTHON" -m venv "$ENV"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" >"$constraints"

"$PY" -m pip install -q "torch==$TORCH_VERSION"
if "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then :; else
    echo "$ENV: pip installed a CUDA build of torch; install the CPU wheel of torch $TORCH_VERSION first" >&2
    exit 1
fi
"$PY" -m pip install -q -c "$constraints" "sae-lens==$SAELENS_VERSION"
"$PY" -c "import sae_lens, torch; print('$ENV: sae-lens', sae_lens.__version__, 'torch', torch.__version__)"
