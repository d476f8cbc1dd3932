#!/usr/bin/env bash
# The accuracy levers of Model Tinting on the offline text suite, one variable at a time against the
# default (docs/minilm_levers.md). Each row is a `compare` variant; finished runs are reused, so rows can
# run in separate processes (e.g. two at a time on two cores, each with OMP_NUM_THREADS=1) and a last call
# without ROWS writes the table:
#
#   ROWS=mt bash scripts/minilm_levers.sh & ROWS=mt_pooler_merged bash scripts/minilm_levers.sh & wait
#   bash scripts/minilm_levers.sh                       # every row; only the missing ones run
#
# STEPS (default 500) is the iteration count of every adaptive row, SEEDS (default 42) their seeds, OUT the
# output folder (default docs/minilm_levers, docs/<SUITE>_levers for another SUITE; of its runs/ folder git
# keeps each run's program_report.json, status.json and TensorBoard events, enough for a later call to reuse a
# finished run). REUSE_ONLY=1 starts no run and tabulates the finished ones (missing seeds are named in the
# table). PROTOCOLS=transductive,inductive also runs every adaptive row adapting on the suite's val inputs
# (row <name>@inductive; default: transductive only, the paper's protocol). Extra arguments go to every
# fusion_bench run (default: fabric.accelerator=cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-500}
SEEDS=${SEEDS:-42}
SUITE=${SUITE:-minilm_text}
default_out=docs/minilm_levers
[ "$SUITE" = minilm_text ] || default_out=docs/${SUITE}_levers  # runs of two suites never share a folder
OUT=${OUT:-$default_out}

# name | base method | overrides (space-separated) beyond max_steps. The rows of options that were measured to
# change nothing and then removed (coefficient_lr, zero_grad, empty_batch, surgery, update) stay in docs/minilm_levers.md
# with their runs; their commands need a checkout from before the removal.
LEVERS=(
  "mt|model_tinting|"
  "mt_pooler_merged|model_tinting|method.head_projection=merged"
  "mt_coefficients_only|model_tinting|method.train_tinted_layer=false"
  "mt_heads_only|model_tinting|method.train_coefficients=false"
  "mt_lr_2e-3|model_tinting|method.lr=0.002"
  "mt_plusplus|model_tinting_plusplus|"
  "mt_lot|model_tinting|method.init_from=lot"
  # calibration: the teacher's probabilities as soft targets instead of its labels
  "mt_soft_ce|model_tinting|method.loss=soft_ce"
  # generalization (inputs other than the scored ones; PROTOCOLS=inductive adds <row>@inductive, adapting on val):
  # the fine-tuning inputs (2000 per task, four times the val split) as adaptation data
  "mt_train|model_tinting|method.adaptation_data=train"
  "mt_train_soft_ce|model_tinting|method.adaptation_data=train method.loss=soft_ce"
  # the fine-tuning inputs for longer: 500 iterations of 16 inputs are 4 passes over 2000 inputs (200 are 1.6)
  "mt_train_500_iterations|model_tinting|method.adaptation_data=train method.max_steps=500"
  "mt_train_tint_l2_0.1|model_tinting|method.adaptation_data=train method.tint_l2=0.1"
  "mt_train_pooler_merged|model_tinting|method.adaptation_data=train method.head_projection=merged"
  # the iterate chosen on a fifth of the adaptation inputs held out (select_on_holdout)
  "mt_holdout_0.2|model_tinting|method.select_on_holdout=0.2"
  "mt_train_holdout_0.2|model_tinting|method.adaptation_data=train method.select_on_holdout=0.2"
  # the LOT start adapted on the fine-tuning inputs, with and without the held-out choice of iterate
  "mt_train_lot|model_tinting|method.adaptation_data=train method.init_from=lot"
  "mt_train_lot_holdout_0.2|model_tinting|method.adaptation_data=train method.init_from=lot method.select_on_holdout=0.2"
  # the tinted layer held near its fine-tuned start: an L2 penalty towards it
  "mt_tint_l2_0.1|model_tinting|method.tint_l2=0.1"
  "mt_tint_l2_1|model_tinting|method.tint_l2=1.0"
  # fewer iterations (a row's own method.max_steps replaces STEPS)
  "mt_20_iterations|model_tinting|method.max_steps=20"
  "mt_50_iterations|model_tinting|method.max_steps=50"
  "mt_100_iterations|model_tinting|method.max_steps=100"
  "mt_50_iterations_soft_ce|model_tinting|method.max_steps=50 method.loss=soft_ce"
  # AdaMerging's objective (entropy, coefficients only, heads and pooler as FusionBench's AdaMerging leaves
  # them, its learning rate) in our loop: FusionBench has no AdaMerging for BERT. Its seed 42 run's
  # merging_weights.pt is the start of mt_adamerging.
  "adamerging_entropy|model_tinting|method.head_projection=merged method.loss=entropy method.train_tinted_layer=false method.lr=0.001"
  "mt_adamerging|model_tinting|method.init_from=adamerging method.adamerging_weights=$OUT/runs/adamerging_entropy/seed_42"
)
BASELINES=pretrained,individual,task_arithmetic,ties_merging,emr_merging

arguments=()
names=()
for lever in "${LEVERS[@]}"; do
  IFS="|" read -r name base overrides <<< "$lever"
  arguments+=(--variant "$name=$base")
  [[ "$overrides" == *method.max_steps=* ]] || arguments+=(--set "$name:method.max_steps=$STEPS")
  for override in $overrides; do arguments+=(--set "$name:$override"); done
  names+=("$name")
done
rows=${ROWS:-$BASELINES,$(IFS=,; echo "${names[*]}")}
extra=("$@")
[ ${#extra[@]} -gt 0 ] || extra=(fabric.accelerator=cpu)
[ -z "${REUSE_ONLY:-}" ] || arguments+=(--reuse-only)
exec python scripts/compare.py --suite "$SUITE" --out "$OUT" --methods "$rows" --seeds "$SEEDS" \
  --protocols "${PROTOCOLS:-transductive}" "${arguments[@]}" -- "${extra[@]}"
