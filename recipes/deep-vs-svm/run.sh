#!/usr/bin/env bash
# Why do the deep families trail the eGeMAPS SVM on EmoDB 7-class LOSO? One change at a time
# against dcnn's defaults (paper-000 sizes), same folds and seeds, and the eGeMAPS models beside.
#   bash recipes/deep-vs-svm/run.sh            (SEEDS=2 by default here)
RECIPE="$(cd "$(dirname "$0")" && pwd)"
SEEDS="${SEEDS:-2}"
source "$RECIPE/../_common.sh"
E7="--corpus emodb --protocol loso --labels native"

prepare_corpora
features egemaps,mfb
# the references: linear SVM on eGeMAPS, global and per-speaker normalisation
$SERRAY train svm --workdir "$W" --features egemaps $E7 --normalize global --run svm-emodb7
$SERRAY train svm --workdir "$W" --features egemaps $E7 --normalize speaker --run svm-spk-emodb7
# schedule: refit on training + validation; batch 16 (4x the SGD steps) with patience 10
$SERRAY seeds dcnn --workdir "$W" $E7 --normalize global --n "$SEEDS" --run-prefix dcnnk15-emodb7 \
    --variant base --variant refit:refit=true --variant bs16-p10-refit:batch_size=16,patience=10,refit=true
# normalisation of the log-mel input: per speaker (transductive), per utterance (not),
# and per utterance with class-balanced epochs
$SERRAY seeds dcnn --workdir "$W" $E7 --normalize speaker --n "$SEEDS" --run-prefix dcnn-spk-emodb7 --variant base
$SERRAY seeds dcnn --workdir "$W" $E7 --normalize utterance --n "$SEEDS" --run-prefix dcnnk15-utt-emodb7 \
    --variant base --variant balanced:sampler=balanced
keep_results emodb7 "svm-emodb7,svm-spk-emodb7,dcnnk15-emodb7-base,dcnnk15-emodb7-refit,dcnnk15-emodb7-bs16-p10-refit,dcnn-spk-emodb7-base,dcnnk15-utt-emodb7-base,dcnnk15-utt-emodb7-balanced"
