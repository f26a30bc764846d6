#!/usr/bin/env bash
# What serray is for: tune every family on EmoDB 4-class LOSO, train seeds of each best
# configuration, search the late-fusion ensemble across families on validation, and give its
# nested estimate beside the best single family.
#   bash recipes/emodb-best/run.sh [MODEL ...]
# Defaults: every family below, NUM_SAMPLES=20 trials each, SEEDS=5, ensembles of k = 1-5.
# The recipe can be run a few families at a time (e.g. the cheap ones first): the ensemble and
# the table take every family of the list whose seeds are stored, whichever call trained them.
# Compute: a 20-trial search of a deep family takes 20-40 min on 2 CPU cores (svm/logreg
# seconds); plan a GPU cluster (`ray up cluster.yaml`) or a night for the whole list.
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
ALL=(svm logreg mlp mgnas dmf mtl dcnn mtl_cnn cnn_lstm nhnn adarl)
MODELS=("${@:-${ALL[*]}}")
NUM_SAMPLES="${NUM_SAMPLES:-20}"
K="${K:-1-5}"
ARGS=$(setting_args emodb4)
t=$(tag emodb4)

# model_args MODEL: the options a family needs beyond the setting (its input, preset, domain).
model_args() {
    case "$1" in
        adarl) echo "--feature-param segment_s=2.0 --preset reduced" ;;
        mgnas) echo "--preset small" ;;
        dmf)   echo "--features egemaps --set domain=gender" ;;
    esac
}

prepare_corpora
features egemaps,mfb,mfcc,lld
features spectrogram --param spectrogram.segment_s=2.0
for m in ${MODELS[@]}; do
    # --resume continues an interrupted search of that name, or starts it
    # shellcheck disable=SC2046,SC2086
    $SERRAY tune "$m" --workdir "$W" $ARGS $(model_args "$m") --num-samples "$NUM_SAMPLES" \
        --name "best-$m-$t" --resume
    # shellcheck disable=SC2046,SC2086
    $SERRAY seeds "$m" --workdir "$W" $ARGS --config "$W/tune/best-$m-$t/best.yaml" $(model_args "$m") \
        --n "$SEEDS" --run-prefix "best-$m-$t" --variant base
done
runs=""
for m in "${ALL[@]}"; do
    [[ -d "$W/predictions/best-$m-$t-base" ]] && runs="$runs,best-$m-$t-base"
done
runs="${runs#,}"
$SERRAY ensemble "$W" --runs "$runs" --k "$K" --nested --name "emodb-best-$t"
reference emodb4
keep_results "$t" "$runs,ensemble:emodb-best-$t,svm-$t"
mkdir -p "$RECIPE/results/$t/ensemble"
cp "$W/ensemble/emodb-best-$t/"{best_per_k.csv,membership_mix.csv,single_members.csv,nested.csv,nested.json,summary.json} \
    "$RECIPE/results/$t/ensemble/"
