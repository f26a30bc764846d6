#!/usr/bin/env bash
# Paper 001 (multi-gating + NAS + contrastive loss): EmoDB (German) and EMOVO (Italian) as the two
# language domains; experts on mfb, mfcc and eGeMAPS; the paper's arms of Tables 3-4.
#   bash recipes/001-mgnas/run.sh [SETTING ...]   (default: both4 emodb4 emovo4)
# both4 (the two corpora in one LOSO run, domain = language) trains every arm: shared_tower
# (the paper's Base), sb, omoe, mmoe, nas, and alpha0 (no contrastive loss). A one-corpus
# setting has one domain, so only the single-domain arms (shared_tower, alpha0) run there.
# Model size: the `small` preset (a quarter of the paper's widths), the paper's 20 epochs.
RECIPE="$(cd "$(dirname "$0")" && pwd)"
source "$RECIPE/../_common.sh"
SETTINGS=("${@:-both4 emodb4 emovo4}")

prepare_corpora
features egemaps,mfb,mfcc
for s in ${SETTINGS[@]}; do
    t=$(tag "$s")
    reference "$s"
    if [[ "$s" == both4 ]]; then
        arms mgnas "$s" mgnas --preset small --domain language \
            --variant shared_tower --variant sb --variant omoe --variant mmoe --variant nas --variant alpha0
        keep_results "$t" "mgnas-$t-shared_tower,mgnas-$t-sb,mgnas-$t-omoe,mgnas-$t-mmoe,mgnas-$t-nas,mgnas-$t-alpha0,svm-$t"
    else
        arms mgnas "$s" mgnas --preset small --variant shared_tower --variant alpha0
        keep_results "$t" "mgnas-$t-shared_tower,mgnas-$t-alpha0,svm-$t"
    fi
done
