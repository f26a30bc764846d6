#!/usr/bin/env bash
# Paper 003 (diverse feature mapping): vanilla / MTL / DANN systems (gamma 0 / +1 / -1 on the
# gradient from the domain classifier), the fake-domain remapped systems, and the late fusion
# of all of them (ensemble search on validation, with its nested estimate).
#   bash recipes/003-dmf/run.sh [SETTING ...]   (default: both4 emodb4 emovo4)
# Domain = gender x language (both4: EmoDB + EMOVO, four domains fxde, mxde, fxit, mxit, as the
# paper's English/Japanese x male/female) or gender alone within one corpus.
# FE: no pretrained SSL weights here, so the FE is the small trainable one on a cached utterance
# vector ($FEATURES, default egemaps; compare is closer to the paper's rich input).
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-both4 emodb4 emovo4}")
FEATURES="${FEATURES:-egemaps}"

prepare_corpora
features "egemaps,$FEATURES"
for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    reference "$s"
    if [[ "$s" == both4 ]]; then
        domain="gender*language"; remaps=(remap-fxde remap-mxde remap-fxit remap-mxit)
    else
        domain="gender"; remaps=(remap-f remap-m)
    fi
    variants=(--variant vanilla --variant mtl --variant dann)
    for r in "${remaps[@]}"; do variants+=(--variant "$r"); done
    arms dmf "$s" "dmf-$FEATURES" --features "$FEATURES" --set "domain=$domain" "${variants[@]}"
    runs="dmf-$FEATURES-$t-vanilla,dmf-$FEATURES-$t-mtl,dmf-$FEATURES-$t-dann"
    for r in "${remaps[@]}"; do runs="$runs,dmf-$FEATURES-$t-$r"; done
    $SERRAY ensemble "$W" --runs "$runs" --k "${K:-1-5}" --nested --name "recipe-003-$t"
    keep_results "$t" "$runs,ensemble:recipe-003-$t,svm-$t"
    cp "$W/ensemble/recipe-003-$t/"{best_per_k.csv,nested.csv,nested.json,single_members.csv} "$RECIPE/results/$t/"
done
