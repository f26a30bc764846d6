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
# ADARL part (FAMILIES, default "dcnn adarl"): recipe 004's full model (`reduced` preset, 8 epochs,
# 2 s spectrograms; its run adarl-TAG-adarl is the base arm) against the same model trained with
# the same waveform copies of the spectrogram set (adarl-TAG-wave); no masks for ADARL.
#   SEEDS=5 bash recipes/augment/run.sh emodb4
#   FAMILIES=adarl SEEDS=2 bash recipes/augment/run.sh emodb4
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-emodb4}")

WAVE="${WAVE:-1}"
FAMILIES="${FAMILIES:-dcnn adarl}"
COPIES="${COPIES:-2}"
AUGMENT="${AUGMENT:---augment speed=0.9,1.1 --augment noise=5:20}"

# copies SET [--param ...]: extract (or find) the waveform copies of SET; prints their tag.
copies() {
    # shellcheck disable=SC2086
    local tag=$($SERRAY features "$W" --set "$@" $AUGMENT --augment-copies "$COPIES" --augment-seed 0 --no-progress \
                | sed -n 's/^augmented copies: tag \(aug-[0-9a-f]*\).*/\1/p')
    [[ -n "$tag" ]] || { echo "recipes/augment: extracting the augmented copies of $1 gave no tag" >&2; exit 1; }
    echo "$tag"
}

prepare_corpora
features egemaps,mfb
[[ " $FAMILIES " == *" adarl "* ]] && features spectrogram --param spectrogram.segment_s=2.0
for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    reference "$s"
    runs=""
    if [[ " $FAMILIES " == *" dcnn "* ]]; then
        variants=(--variant base --variant specaug:time_masks=2,freq_masks=2)
        runs="dcnn-$t-base,dcnn-$t-specaug"
        if [[ "$WAVE" != 0 ]]; then
            AUG_TAG=$(copies mfb) || exit 1
            echo "recipes/augment: waveform copies of mfb $AUG_TAG ($AUGMENT, $COPIES copies)"
            variants+=(--variant "wave:wave_augment=$AUG_TAG"); runs="$runs,dcnn-$t-wave"
        fi
        arms dcnn "$s" dcnn "${variants[@]}"
    fi
    if [[ " $FAMILIES " == *" adarl "* && "$WAVE" != 0 ]]; then
        AUG_TAG=$(copies spectrogram --param spectrogram.segment_s=2.0) || exit 1
        echo "recipes/augment: waveform copies of spectrogram $AUG_TAG ($AUGMENT, $COPIES copies)"
        arms adarl "$s" adarl --feature-param segment_s=2.0 --preset reduced --set epochs=8 \
            --variant adarl --variant "wave:wave_augment=$AUG_TAG"
        runs="$runs,adarl-$t-adarl,adarl-$t-wave"
    fi
    keep_results "$t" "${runs#,},svm-$t"
done
