#!/usr/bin/env bash
# What on-the-fly SpecAugment-style masking does for dcnn (paper 000's baseline) on log-mel:
# the same seeds with and without masks, paired over speakers, and the eGeMAPS SVM beside.
#   bash recipes/augment/run.sh [SETTING ...]     (default: emodb4)
# Masks: 2 time masks of up to 20 frames and 2 frequency masks of up to 8 mel bands per
# training sample (`--set time_masks=2 --set freq_masks=2`; validation and test are never masked).
# The base arm is recipe 000's run dcnn-TAG-base (shared work directory: its stored seeds are reused).
# Waveform arm (WAVE=0 skips it): COPIES (default 2) augmented copies of every utterance, speed
# 0.9/1.1 and pink noise at 5-20 dB SNR (AUGMENT overrides the --augment options), extracted
# once into the feature cache under their tag; dcnn-TAG-wave trains on the copies of each
# fold's training utterances (`--set wave_augment=aug-...`; validation and test never see copies).
#   SEEDS=5 bash recipes/augment/run.sh emodb4
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-emodb4}")

WAVE="${WAVE:-1}"
COPIES="${COPIES:-2}"
AUGMENT="${AUGMENT:---augment speed=0.9,1.1 --augment noise=5:20}"

prepare_corpora
features egemaps,mfb
variants=(--variant base --variant specaug:time_masks=2,freq_masks=2)
if [[ "$WAVE" != 0 ]]; then
    # shellcheck disable=SC2086
    AUG_TAG=$($SERRAY features "$W" --set mfb $AUGMENT --augment-copies "$COPIES" --augment-seed 0 --no-progress \
              | sed -n 's/^augmented copies: tag \(aug-[0-9a-f]*\).*/\1/p')
    [[ -n "$AUG_TAG" ]] || { echo "recipes/augment: extracting the augmented copies gave no tag" >&2; exit 1; }
    echo "recipes/augment: waveform copies $AUG_TAG ($AUGMENT, $COPIES copies)"
    variants+=(--variant "wave:wave_augment=$AUG_TAG")
fi
for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    reference "$s"
    arms dcnn "$s" dcnn "${variants[@]}"
    runs="dcnn-$t-base,dcnn-$t-specaug"
    [[ "$WAVE" != 0 ]] && runs="$runs,dcnn-$t-wave"
    keep_results "$t" "$runs,svm-$t"
done
