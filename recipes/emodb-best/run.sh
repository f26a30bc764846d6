#!/usr/bin/env bash
# What serray is for: tune every family on EmoDB 4-class LOSO, train seeds of each best
# configuration, search the late-fusion ensemble across families on validation, and give its
# nested estimate beside the best single family.
#   bash recipes/emodb-best/run.sh [MODEL ...]
# Defaults: every family below, NUM_SAMPLES=20 trials each, SEEDS=5, ensembles of k = 1-5.
# Compute: a 20-trial search of a deep family takes 20-40 min on 2 CPU cores (svm/logreg
# seconds); plan a GPU cluster (`ray up cluster.yaml`) or a night for the whole list.
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
MODELS=("${@:-svm logreg mlp dcnn cnn_lstm mtl_cnn nhnn mtl mgnas adarl}")
NUM_SAMPLES="${NUM_SAMPLES:-20}"
K="${K:-1-5}"
ARGS=$(setting_args emodb4)

prepare_corpora
features egemaps,mfb,mfcc,lld
features spectrogram --param spectrogram.segment_s=2.0
runs=""
for m in ${MODELS[@]}; do
    extra=()
    [[ "$m" == adarl ]] && extra=(--feature-param segment_s=2.0 --preset reduced)
    [[ "$m" == mgnas ]] && extra=(--preset small)
    # --resume continues an interrupted search of that name, or starts it
    # shellcheck disable=SC2086
    $SERRAY tune "$m" --workdir "$W" $ARGS "${extra[@]}" --num-samples "$NUM_SAMPLES" --name "best-$m" --resume
    $SERRAY seeds "$m" --workdir "$W" --config "$W/tune/best-$m/best.yaml" "${extra[@]}" --n "$SEEDS" \
        --run-prefix "best-$m" --variant base
    runs="$runs,best-$m-base"
done
runs="${runs#,}"
$SERRAY ensemble "$W" --runs "$runs" --k "$K" --nested --name emodb-best
keep_results emodb4 "$runs,ensemble:emodb-best"
mkdir -p "$RECIPE/results/ensemble"
cp "$W/ensemble/emodb-best/"{best_per_k.csv,membership_mix.csv,single_members.csv,nested.csv,nested.json,summary.json} \
    "$RECIPE/results/ensemble/"
