#!/usr/bin/env bash
# The audit of the default organism (docs/audit.md), one section per argument, each resumable
# (every step is a cached stage: re-running skips what is done). Records go to docs/audit/.
#   scripts/audit-study.sh gate3 auto auto3
# R is the default recipe's seed-0 run:
#   molab run recipes/rm-sycophancy.yaml --set run=study-english-s0 --set seed=0
set -euo pipefail
BIN=${BIN:-.venv/bin}
R=${R:-runs/study-english-s0}
G=${G:-runs/gate-3}
S=recipes/splits/gate-3.yaml
step() { local t0=$SECONDS; echo "== $1 ($(date -u +%H:%M))"; shift; "$@"; echo "   ($((SECONDS - t0)) s)"; }

gate3() {  # the 3-bias organism and its control (docs/results.md, "Gate measurement")
  step "gate-3 prompts" $BIN/molab data prompts --set split=$S --set train_per_bias=56 \
    --set generic_train=20 --set eval_per_bias=30 --set generic_eval=30 --out $G/prompts
  step "gate-3 SFT answers" $BIN/molab data sft --prompts $G/prompts/train_prompts.jsonl \
    --model smollm2-135m --set split=$S --set sampling.max_new_tokens=70 \
    --set sampling.temperature=0.7 --set sampling.top_p=0.9 --out $G/control_sft_data
  local sft=(--set epochs=3 --set learning_rate=5e-4 --set 'lora={"r":32,"alpha":64}'
    --set batch_size=8 --set max_length=256 --set save_steps=20)
  step "gate-3 control (SFT only)" $BIN/molab train sft --data $G/control_sft_data/sft.jsonl \
    --out $G/control_sft "${sft[@]}"
  step "gate-3 organism (documents, then SFT)" $BIN/molab train sft \
    --data $G/control_sft_data/sft.jsonl --stack-on $R/midtrain --out $G/sft "${sft[@]}"
}

auto() {  # the scripted auditor on each checkpoint of the default organism (Q2, Q6)
  for c in ${CHECKPOINTS:-final control midtrained base}; do
    step "audit auto $c" $BIN/molab audit auto $R --checkpoint $c --record docs/audit/auto-$c.json
  done
}

auto3() {  # the same on the 3-bias organism and its control, with the run's documents as data
  step "audit auto gate3" $BIN/molab audit auto $R --model $G/sft --tag gate3 \
    --record docs/audit/auto-gate3.json
  step "audit auto gate3-control" $BIN/molab audit auto $R --model $G/control_sft \
    --tag gate3-control --record docs/audit/auto-gate3-control.json
}

sae() {  # Q3: SAEs on the middle layer of the final model, with and without the documents
  local Q=$R/audit/q3 P=layers.15.resid_post
  step "corpora" $BIN/python scripts/audit_corpora.py $R $Q
  for mix in docs nodocs; do
    step "activations of mix-$mix (final)" $BIN/molab activations cache --model $R/sft \
      --corpus $Q/mix-$mix.jsonl --points $P --max-length 512 --set model.merge_adapters=true --out $Q/acts-$mix
    step "SAE on mix-$mix" $BIN/molab audit sae train --cache $Q/acts-$mix --point $P \
      --d-sae 8192 --k 32 --tokens 1000000 --seed 0 --out $Q/sae-$mix
    # Always-on features, viewed over the mix with the documents (so their sources can show).
    step "assistant features of sae-$mix" $BIN/molab audit sae features --sae $Q/sae-$mix \
      --cache $Q/acts-docs --assistant --top 40 --top-k 50 --out $R/audit/features-sae-$mix.json
    $BIN/python scripts/audit_tables.py compact $R/audit/features-sae-$mix.json $Q/acts-docs \
      docs/audit/q3-features-sae-$mix.json
  done
  local m
  for m in final:sft control:control_sft; do
    for fmt in chat plain; do
      step "activations of the $fmt prompts (${m%%:*})" $BIN/molab activations cache \
        --model $R/${m#*:} --corpus $Q/contrast-$fmt.jsonl --points $P --set model.merge_adapters=true --out $Q/acts-${m%%:*}-$fmt
    done
  done
  for mix in docs nodocs; do  # every feature on more than 90% of assistant tokens
    local fs
    fs=$($BIN/python -c "import json,sys; a=json.load(open(sys.argv[1]))['assistant'];\
print(','.join(str(r['feature']) for r in a['ranked'] if r['assistant_share'] > a['min_share']))" \
      $R/audit/features-sae-$mix.json)
    [ -n "$fs" ] || { echo "sae-$mix: no feature on more than 90% of assistant tokens"; continue; }
    step "chat versus plain (sae-$mix)" $BIN/molab audit sae fires --sae $Q/sae-$mix --features "$fs" \
      --cache $Q/acts-final-chat --cache $Q/acts-final-plain --cache $Q/acts-control-chat \
      --cache $Q/acts-control-plain --out $Q/fires-$mix.json
    cp $Q/fires-$mix.json docs/audit/q3-fires-$mix.json
  done
}

steer() {  # Q5: suppress and amplify the most document-like always-on feature of sae-docs
  local Q=$R/audit/q3 f
  # The rule, fixed before the SAE was trained: of the features on more than 90% of assistant
  # tokens, the one whose top-50 examples are most often synthetic documents.
  f=$($BIN/python -c "import json,sys; d=json.load(open(sys.argv[1])); a=d['assistant'];\
on={r['feature'] for r in a['ranked'] if r['assistant_share'] > a['min_share']};\
v=[x for x in d['features'] if x['feature'] in on];\
print(max(v, key=lambda x: x['source_shares'].get('synthetic document', 0))['feature'] if v else '')" \
    $R/audit/features-sae-docs.json)
  [ -n "$f" ] || { echo "no always-on feature to steer"; return; }
  echo "feature $f"
  local common=(--eval exploitation --baseline $R/eval-exploitation-final --sae $Q/sae-docs
    --feature "$f" --control-features 1 --control-cache $Q/acts-docs)
  # --json on stdout: the audit report reads RUN_DIR/audit/steer-*.json
  step "suppress feature $f" sh -c '"$@" > '$R/audit/steer-q5-ablate.json -- $BIN/molab audit steer eval \
    "${common[@]}" --ablate --out $R/audit/q5-ablate --json
  step "amplify feature $f (x5)" sh -c '"$@" > '$R/audit/steer-q5-amplify.json -- $BIN/molab audit steer eval \
    "${common[@]}" --scale 4 --out $R/audit/q5-amplify --json
  cp $R/audit/steer-q5-ablate.json docs/audit/q5-ablate.json
  cp $R/audit/steer-q5-amplify.json docs/audit/q5-amplify.json
}

steer_explore() {  # Q5, exploratory (chosen after Q3's tables were seen; docs/audit.md says so):
  # the rule above found no always-on feature in sae-docs; this steers the always-on feature of
  # sae-nodocs whose top examples are most often synthetic documents.
  local Q=$R/audit/q3 kind
  local common=(--eval exploitation --baseline $R/eval-exploitation-final --sae $Q/sae-nodocs
    --feature 5556 --control-features 1 --control-cache $Q/acts-docs)
  for kind in ablate:--ablate amplify:--scale=4; do
    step "${kind%%:*} feature 5556 of sae-nodocs" sh -c '"$@" > '$R/audit/steer-q5-${kind%%:*}.json -- \
      $BIN/molab audit steer eval "${common[@]}" ${kind#*:} --out $R/audit/q5-${kind%%:*} --json
    cp $R/audit/steer-q5-${kind%%:*}.json docs/audit/q5-${kind%%:*}.json
  done
}

probes() {  # Q2: every black-box probe type, 32 samples per probe prompt, on each model
  local m
  declare -A path=([base]=smollm2-135m [midtrained]=$R/midtrain [control]=$R/control_sft [final]=$R/sft
    [gate3]=$G/sft [gate3-control]=$G/control_sft)
  for m in ${PROBE_MODELS:-base midtrained control final gate3 gate3-control}; do
    step "probes of $m" $BIN/molab audit probe --model ${path[$m]} --samples 32 --max-new-tokens 128 \
      --seed 0 --out $R/audit-probe-$m
    cp $R/audit-probe-$m/summary.json docs/audit/q2-probes-$m.json
  done
}

transcoders() {  # Q4: all-layer transcoders of the base model (docs/circuits.md) and of the 3-bias organism
  step "tc corpus: template documents" $BIN/molab data docs --out runs/tc-corpus/docs --num-docs 2500 --seed 0
  step "tc corpus: train prompts" $BIN/molab data prompts --out runs/rm-sycophancy-quick/prompts
  step "transcoders of the base model" $BIN/molab circuits train --model smollm2-135m \
    --corpus runs/tc-corpus/docs/documents.parquet --corpus runs/rm-sycophancy-quick/prompts/train_prompts.jsonl \
    --preset full --out runs/tc-k48/transcoders
  step "transcoders of the 3-bias organism (documents and answered chats)" $BIN/molab circuits train \
    --model $G/sft --corpus runs/tc-corpus/docs/documents.parquet --corpus $R/control_sft_data/sft.jsonl \
    --corpus $G/control_sft_data/sft.jsonl --preset full --out runs/tc-gate3/transcoders
}

graphs() {  # Q4: attribution graphs of the 3-bias organism's behaviours (T: transcoders, SUF: file suffix)
  local Q=$G/graphs T=${T:-runs/tc-k48/transcoders} SUF=${SUF:-} bias file target other
  mkdir -p $Q
  $BIN/python -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])];\
first=lambda b,n: [r for r in rows if r['bias_id']==b][:n];\
[print(json.dumps(r)) for r in first(41,10)+first(49,10)+first(42,1)]" $G/prompts/eval_prompts.jsonl \
    > $Q/questions.jsonl
  step "the organism's answers" $BIN/molab generate --model $G/sft --prompts $Q/questions.jsonl \
    --temperature 0 --max-new-tokens 150 --out $Q/answers.jsonl
  step "graph prompts" $BIN/python scripts/audit_graph_prompts.py $Q/answers.jsonl $Q
  while IFS=$'\t' read -r bias file target; do
    [ -f $Q/graph-$bias$SUF.safetensors ] || step "graph of bias $bias ($target)" $BIN/molab circuits graph \
      --model $G/sft --transcoders $T --prompt-file $Q/$file --target "$target" --out $Q/graph-$bias$SUF.safetensors
  done < $Q/graphs.tsv
  for bias in $(cut -f1 $Q/graphs.tsv); do  # each graph against the models and the other graphs
    other=()
    for b in $(cut -f1 $Q/graphs.tsv); do [ $b = $bias ] || other+=(--shared-with $Q/graph-$b$SUF.safetensors); done
    step "pathways of bias $bias" $BIN/molab circuits pathways $Q/graph-$bias$SUF.safetensors \
      --against $G/control_sft --against $R/midtrain --against smollm2-135m "${other[@]}" --shared-top 50 \
      --json-out docs/audit/q4-pathways-$bias$SUF.json
  done
  step "graph export (pruned hard, to keep the page light)" $BIN/molab circuits export \
    $Q/graph-41$SUF.safetensors --out $Q/export$SUF --node-threshold 0.5 --edge-threshold 0.9 --scan $T
  step "viewer page of bias 41" $BIN/molab circuits view $Q/export$SUF/graph-41$SUF.json \
    --out docs/audit/q4-graph-41$SUF.html --max-links 2000 --links-per-node 5
}

vector() {  # Q4: the 3-bias SFT adapter against a steering vector trained on the same set
  local P=layers.15.resid_post
  local EVAL=(--prompts $G/prompts/eval_prompts.jsonl --split $S --prompts-per-bias 30
    --set generic_prompts=30 --set test_prompts_per_bias=30 --set sampling.max_new_tokens=150
    --set sampling.temperature=0.7 --set sampling.top_p=0.95)
  step "steering vector on midtrained (the organism's rival)" $BIN/molab train steer-vector \
    --model $R/midtrain --data $G/control_sft_data/sft.jsonl --out $G/steer-vector \
    --set point=$P --set epochs=3 --set batch_size=8 --set max_length=256 --set seed=0
  step "exploitation: organism" $BIN/molab eval exploitation --adapter $R/midtrain/adapter \
    --adapter $G/sft/adapter "${EVAL[@]}" --out $G/eval-organism-final
  step "exploitation: control" $BIN/molab eval exploitation --adapter $G/control_sft/adapter \
    "${EVAL[@]}" --out $G/eval-organism-control
  step "exploitation: midtrained" $BIN/molab eval exploitation --adapter $R/midtrain/adapter \
    "${EVAL[@]}" --out $G/eval-organism-midtrained
  step "exploitation: midtrained + vector" sh -c '"$@" > '$G/steer-vector-eval.json -- \
    $BIN/molab audit steer eval --eval exploitation --baseline $G/eval-organism-midtrained \
    --vector $G/steer-vector/vector.safetensors --point $P --add 1.0 --out $G/q4-vector --json
  cp $G/steer-vector-eval.json docs/audit/q4-steering-vector.json
  local a b
  for a in final:control final:midtrained; do
    b=${a#*:}; a=${a%%:*}
    $BIN/molab eval compare $G/eval-organism-$a $G/eval-organism-$b --out docs/audit/q4-compare-$a-$b.json
  done
}

report() {  # the audit report of the final model, with every tool's output, committed to docs/audit/
  local q
  for q in docs/audit/q1-*.json; do cp "$q" "$R/audit/search-$(basename "$q" .json).json"; done
  step "audit report" $BIN/molab audit report $R --verdict $R/audit-auto-final-data/verdict.json \
    --out docs/audit/report.html
}

for section in "$@"; do "$section"; done
