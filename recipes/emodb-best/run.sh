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
OUT="$t${RESULTS_SUFFIX:-}"  # this call's folder under results/ (see RESULTS_SUFFIX in _common.sh)

# model_args MODEL: the options a family needs beyond the setting (its input, preset, domain).
model_args() {
    case "$1" in
        adarl) echo "--feature-param segment_s=2.0 --preset reduced" ;;
        mgnas) echo "--preset small" ;;
        dmf)   echo "--features egemaps --set domain=gender" ;;
    esac
}

# median_best_epoch RUN: the median (half up) over the kept fold models of RUN of the epoch its
# early stopping chose (model.json: training.best_epoch).
median_best_epoch() {
    python3 - "$W/models/$1" <<'PY'
import json, math, pathlib, statistics, sys
epochs = [json.loads(p.read_text())["training"]["best_epoch"] for p in pathlib.Path(sys.argv[1]).glob("*/fold*/model.json")]
if not epochs:
    sys.exit(f"recipes: no kept fold models under {sys.argv[1]}")
print(max(1, math.floor(statistics.median(epochs) + 0.5)))
PY
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

# Fixed-epoch members (FIXED_MODELS, torch families with a one-stage plan; not nhnn, whose
# second stage selects per group, nor mtl, whose ELM stage is fitted after): the tuned config
# again, trained for the median epoch its early-stopped seeds chose, with early_stop=none, so
# that no member's validation logits chose its epoch; then the same ensemble search over them
# and the scikit-learn families (which never stop on validation).
FIXED_MODELS="${FIXED_MODELS:-mlp mgnas dmf dcnn mtl_cnn cnn_lstm adarl}"
fixed_runs=""
for m in $FIXED_MODELS; do
    [[ -d "$W/models/best-$m-$t-base" ]] || continue
    e=$(median_best_epoch "best-$m-$t-base")
    n=$(find "$W/predictions/best-$m-$t-base" -name '*.parquet' | wc -l)
    # shellcheck disable=SC2046,SC2086
    $SERRAY seeds "$m" --workdir "$W" $ARGS --config "$W/tune/best-$m-$t/best.yaml" $(model_args "$m") \
        --n "$n" --run-prefix "best-$m-$t" --variant "fixed:early_stop=none,epochs=$e"
    fixed_runs="$fixed_runs,best-$m-$t-fixed"
done
unstopped=""
for m in svm logreg; do
    [[ -d "$W/predictions/best-$m-$t-base" ]] && unstopped="$unstopped,best-$m-$t-base"
done
$SERRAY ensemble "$W" --runs "${unstopped#,}$fixed_runs" --k "$K" --nested --name "emodb-best-fixed-$t"

reference emodb4
keep_results "$t" "$runs,ensemble:emodb-best-$t${fixed_runs},ensemble:emodb-best-fixed-$t,svm-$t"
for e in "" -fixed; do
    mkdir -p "$RECIPE/results/$OUT/ensemble$e"
    cp "$W/ensemble/emodb-best$e-$t/"{best_per_k.csv,membership_mix.csv,single_members.csv,nested.csv,nested.json,summary.json} \
        "$RECIPE/results/$OUT/ensemble$e/"
done
# The tuned configuration of each family stored (its best.yaml), kept beside the results so that
# its seeds can be trained again without the search:
#   serray seeds MODEL --config recipes/emodb-best/results/OUT/best/MODEL.yaml ...
mkdir -p "$RECIPE/results/$OUT/best"
for m in "${ALL[@]}"; do
    if [[ -f "$W/tune/best-$m-$t/best.yaml" ]]; then
        cp "$W/tune/best-$m-$t/best.yaml" "$RECIPE/results/$OUT/best/$m.yaml"
    fi
done
