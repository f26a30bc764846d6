#!/usr/bin/env bash
# What on-the-fly SpecAugment-style masking does for dcnn (paper 000's baseline) on log-mel:
# the same seeds with and without masks, paired over speakers, and the eGeMAPS SVM beside.
#   bash recipes/augment/run.sh [SETTING ...]     (default: emodb4)
# Masks: 2 time masks of up to 20 frames and 2 frequency masks of up to 8 mel bands per
# training sample (`--set time_masks=2 --set freq_masks=2`; validation and test are never masked).
# The base arm is recipe 000's run dcnn-TAG-base (shared work directory: its stored seeds are reused).
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-emodb4}")

prepare_corpora
features egemaps,mfb
for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    reference "$s"
    arms dcnn "$s" dcnn --variant base --variant specaug:time_masks=2,freq_masks=2
    keep_results "$t" "dcnn-$t-base,dcnn-$t-specaug,svm-$t"
done
