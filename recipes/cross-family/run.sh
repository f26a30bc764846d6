#!/usr/bin/env bash
# The cross-family late-fusion ensemble: every family's seeds of one setting as candidate members
# (paper 000's dcnn, mtl_cnn, cnn_lstm and nhnn arms, paper 004's three ADARL arms) and the eGeMAPS
# SVM, searched exhaustively for the best validation-selected subset of each size, with the nested
# estimate (per outer fold, the subset is chosen without that fold's test speakers).
#   NORMALIZE=speaker bash recipes/cross-family/run.sh [SETTING ...]    (default: emodb4)
# Needs the runs of recipes 000-nhnn and 004-adarl for the same setting and normalisation in $W
# (run those first with the same W, SEEDS and NORMALIZE); it trains nothing itself.
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-emodb4}")

for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    runs="dcnn-$t-base,mtl_cnn-$t-base,cnn_lstm-$t-base,nhnn-$t-fc,nhnn-$t-fc_conv"
    runs="$runs,adarl-$t-adarl,adarl-$t-backbone,adarl-$t-adversarial,svm-$t"
    $SERRAY ensemble "$W" --runs "$runs" --k "${K:-1-5}" --nested --name "cross-family-$t"
    keep_results "$t" "ensemble:cross-family-$t:k=${KREPORT:-5},svm-$t,nhnn-$t-fc,dcnn-$t-base"
    cp "$W/ensemble/cross-family-$t/"{best_per_k.csv,nested.csv,nested.json,single_members.csv,membership_mix.csv,summary.json} \
        "$RECIPE/results/$t/"
done
