#!/usr/bin/env bash
# A separate virtual environment with circuit-tracer and its own pins: molab's reference oracle
# for attribution graphs (`molab bench circuits`, tests/test_circuit_tracer_agreement.py).
#
# Why separate: circuit-tracer pins transformers <= 4.57.3 and nnsight 0.6.x, molab runs on
# transformers 5.x; both share the one CPU torch build. See ../shared/reference/circuits.md.
#
# Usage:
#   scripts/circuit-tracer-env.sh [ENV_DIR]           # default: .venv-circuit-tracer (gitignored)
#   CIRCUIT_TRACER_SRC=/path/to/circuit-tracer scripts/circuit-tracer-env.sh
#
# CIRCUIT_TRACER_SRC: a source tree of upstream's repository (decoderesearch/circuit-tracer;
# its TopK support and current API; tag v0.5.0 reports itself as 0.4.1). Without it,
# `circuit-tracer==0.5.0` comes from the package index: a fork that predates upstream's TopK
# support but loads JumpReLU sets, which is what molab writes.
#
# Versions that resolve here (checked 2026-12, Python 3.11): torch 2.13.0+cpu, transformers
# 4.57.3, nnsight 0.6.1, huggingface_hub 0.36.2, transformer-lens 3.2.1 (circuit-tracer
# requires >= 2.16), circuit-tracer 0.4.1 (upstream snapshot, commit 4bb8c0e: what
# tag v0.5.0 and later report) or 0.5.0 (the index's fork). About 1.8 GB; a few minutes.
# scripts/circuit_tracer_graph.py runs on both (checked: the same graph to the last bit).
#
# Idempotent: an environment that already has every pin is left as it is; otherwise the
# missing parts are installed. It never installs a CUDA torch: torch goes in first, alone
# (the +cpu build), and everything after it is constrained to that exact build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${1:-$ROOT/.venv-circuit-tracer}"
PYTHON="${PYTHON:-python3}"
TORCH="${CT_TORCH:-2.13.0}"
TRANSFORMERS="4.57.3"
NNSIGHT="0.6.1"
SRC="${CIRCUIT_TRACER_SRC:-}"
PY="$ENV_DIR/bin/python"

say() { echo "circuit-tracer-env: $*"; }

if [ -n "$SRC" ] && [ ! -f "$SRC/pyproject.toml" ]; then
  echo "circuit-tracer-env: CIRCUIT_TRACER_SRC=$SRC has no pyproject.toml (not a circuit-tracer tree)" >&2
  exit 2
fi

test -x "$PY" || { say "creating $ENV_DIR"; "$PYTHON" -m venv "$ENV_DIR"; }

# 1. torch, alone: the CPU build. `torch==X` also matches the local `X+cpu` wheel, which
#    sorts above the plain (CUDA) release; refuse anything that turns out to carry CUDA.
if ! "$PY" -W ignore -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH')" 2>/dev/null; then
  say "installing torch==$TORCH (CPU build)"
  "$PY" -m pip install -q "torch==$TORCH"
fi
if ! "$PY" -W ignore -c "import torch, sys; sys.exit(torch.version.cuda is not None)"; then
  echo "circuit-tracer-env: the torch in $ENV_DIR is a CUDA build; remove $ENV_DIR and install the CPU wheel" >&2
  exit 1
fi

# 2. the rest, constrained to that torch and circuit-tracer's pins.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" -c "import torch; print('torch==' + torch.__version__)" >"$CONSTRAINTS"
printf 'transformers==%s\nnnsight==%s\nhuggingface_hub<1\n' "$TRANSFORMERS" "$NNSIGHT" >>"$CONSTRAINTS"

installed_src() {  # the source tree circuit-tracer was last installed from (a stamp file)
  cat "$ENV_DIR/.circuit-tracer-src" 2>/dev/null || true
}
want="${SRC:-pypi:circuit-tracer==0.5.0}"
if "$PY" -c "import circuit_tracer, transformers, nnsight, sys; \
sys.exit(not (transformers.__version__ == '$TRANSFORMERS' and nnsight.__version__.startswith('0.6')))" \
    2>/dev/null && [ "$(installed_src)" = "$want" ]; then
  say "already complete"
else
  if [ -n "$SRC" ]; then
    say "installing circuit-tracer from $SRC"
    "$PY" -m pip install -q -c "$CONSTRAINTS" "$SRC" "transformers==$TRANSFORMERS" "nnsight==$NNSIGHT"
  else
    say "installing circuit-tracer==0.5.0 from the package index"
    "$PY" -m pip install -q -c "$CONSTRAINTS" "circuit-tracer==0.5.0" "transformers==$TRANSFORMERS" \
      "nnsight==$NNSIGHT"
  fi
  echo "$want" >"$ENV_DIR/.circuit-tracer-src"
fi

"$PY" - <<'EOF'
import importlib.metadata as md

import torch

names = ["torch", "transformers", "nnsight", "huggingface_hub", "circuit-tracer", "transformer-lens"]
found = {}
for name in names:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = "absent"
print("circuit-tracer-env: " + ", ".join(f"{k} {v}" for k, v in found.items()) + f" (cuda: {torch.version.cuda})")
EOF
say "ready: $PY"
