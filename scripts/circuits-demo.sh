#!/usr/bin/env bash
# Circuit tracing end to end on the default model: transcoders, a graph, its JSON, feature
# files, the offline viewer page and an intervention on the graph's strongest feature.
#   scripts/circuits-demo.sh [TRANSCODERS] [OUT]
# TRANSCODERS: a set to use (default: train the quick preset, 2 layers, minutes; a full set:
#   molab circuits train --preset full ..., see docs/circuits.md). Every step prints its wall time.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${2:-runs/circuits-demo}
TC=${1:-$OUT/transcoders}
PROMPT=${PROMPT:-"The capital of the state containing Dallas is"}
CORPUS=${CORPUS:-$OUT/docs/documents.parquet}
mkdir -p "$OUT"
step() { local t0=$SECONDS; echo "== $1"; shift; "$@"; echo "   ($((SECONDS - t0)) s)"; }

[ -f "$CORPUS" ] || step "a small corpus (template documents)" $BIN/molab data docs --out "$OUT/docs" --num-docs 300
[ -f "$TC/config.yaml" ] || step "transcoders (quick preset)" $BIN/molab circuits train --corpus "$CORPUS" \
  --preset quick --out "$TC"
LAYERS=$($BIN/python -c "import sys, yaml; print(','.join(f'layers.{i}.mlp_in' for i in yaml.safe_load(open(sys.argv[1]))['molab']['layers']))" "$TC/config.yaml")
step "the attribution graph" $BIN/molab circuits graph --transcoders "$TC" --prompt "$PROMPT" --out "$OUT/graph.safetensors"
step "pruned graph JSON" $BIN/molab circuits export "$OUT/graph.safetensors" --out "$OUT/graphs" --slug demo
step "activations for the feature files" $BIN/molab activations cache --corpus "$CORPUS" --points "$LAYERS" \
  --max-tokens 20000 --shard-tokens 4096 --skip-bos --out "$OUT/acts"
step "feature files of the graph's features" $BIN/molab circuits features --transcoders "$TC" --cache "$OUT/acts" \
  --graph "$OUT/graphs/demo.json" --out "$OUT/features"
step "the viewer page" $BIN/molab circuits view "$OUT/graphs/demo.json" --features "$OUT/features" --out "$OUT/demo.html"
TOP=$($BIN/python - "$OUT/graphs/demo.json" <<'PY'
import json, sys
nodes = [n for n in json.load(open(sys.argv[1]))["nodes"] if n["feature_type"] not in ("embedding", "logit", "mlp reconstruction error")]
best = min((n for n in nodes if n["influence"] is not None), key=lambda n: n["influence"])  # most influential
layer, feature, pos = best["node_id"].split("_")
print(f"{layer}:{feature}@{pos}")
PY
)
step "ablate the strongest feature ($TOP) in the real model" $BIN/molab circuits intervene --transcoders "$TC" \
  --prompt "$PROMPT" --ablate "$TOP" --max-new-tokens 12 --out "$OUT/intervene.json"
echo "open $OUT/demo.html (or: $BIN/molab circuits view $OUT/graphs/demo.json --features $OUT/features --serve)"
