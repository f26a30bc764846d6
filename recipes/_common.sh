# Shared set-up of the recipes: sourced by each recipes/<paper>/run.sh.
#
#   DATA   folder holding emodb/ and emovo/ (default: $SERRAY_DATA, else ../shared/data)
#   W      work directory shared by all recipes (default: work/recipes, git-ignored)
#   SEEDS  seeds per arm (default 5)
#   NORMALIZE  feature normalisation of every run (default global; utterance or speaker
#          name the runs SETTING-utterance / SETTING-speaker, so results never mix)
#   SERRAY the serray command (default: serray on PATH)
#   RESULTS_SUFFIX  appended to the name of the results/ folder a call writes (default none), so
#          that a call over a few arms in a fresh work directory keeps the table of an earlier,
#          larger call: RESULTS_SUFFIX=-lstm writes results/emodb7-speaker-lstm/
#
# Every step is idempotent: manifests are rebuilt (cheap), features come from the cache,
# and `serray seeds` skips the (variant, seed) pairs already in the predictions store, so a
# recipe that was interrupted is simply run again.
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DATA="${DATA:-${SERRAY_DATA:-$ROOT/../shared/data}}"
W="${W:-$ROOT/work/recipes}"
SEEDS="${SEEDS:-5}"
NORMALIZE="${NORMALIZE:-global}"
SERRAY="${SERRAY:-serray}"

if [[ ! -d "$DATA/emodb/wav" || ! -d "$DATA/emovo" ]]; then
    echo "recipes: no corpora under $DATA (need emodb/wav and emovo); set DATA=/path/holding/emodb+emovo" >&2
    exit 2
fi

# prepare_corpora: EmoDB and EMOVO manifests in $W (German and Italian, 4-class subsets by --labels).
prepare_corpora() {
    $SERRAY -q data prepare emodb "$DATA/emodb/wav" --workdir "$W"
    $SERRAY -q data prepare emovo "$DATA/emovo" --workdir "$W"
}

# features SET[,SET...] [--param ...]: extract (or find in the cache) feature sets for both corpora.
features() {
    $SERRAY features "$W" --set "$@"
}

# setting_args SETTING: the corpus/protocol/label options of one of the recipes' settings.
#   emodb4  EmoDB 4-class LOSO        emodb7  EmoDB 7-class LOSO       emovo4  EMOVO 4-class LOSO
#   de2it   train EmoDB, test EMOVO (4-class)    it2de  train EMOVO, test EmoDB (4-class)
#   both4   EmoDB + EMOVO pooled, 4-class LOSO over all 16 speakers (two languages in one run)
setting_args() {
    echo "--normalize $NORMALIZE $(_setting_args "$1")"
}

# tag SETTING: the setting's name in run names (with the normalisation unless global).
tag() {
    if [[ "$NORMALIZE" == global ]]; then echo "$1"; else echo "$1-$NORMALIZE"; fi
}

_setting_args() {
    case "$1" in
        emodb4) echo "--corpus emodb --protocol loso --labels 4class" ;;
        emodb7) echo "--corpus emodb --protocol loso --labels native" ;;
        emovo4) echo "--corpus emovo --protocol loso --labels 4class" ;;
        de2it)  echo "--protocol cross-corpus --train-corpus emodb --test-corpus emovo --labels 4class" ;;
        it2de)  echo "--protocol cross-corpus --train-corpus emovo --test-corpus emodb --labels 4class" ;;
        both4)  echo "--protocol loso --labels 4class" ;;
        *) echo "recipes: unknown setting '$1' (emodb4, emodb7, emovo4, de2it, it2de, both4)" >&2; return 2 ;;
    esac
}

# arms MODEL SETTING PREFIX [serray seeds options, --variant ...]: $SEEDS seeds of each arm;
# the runs are PREFIX-TAG-VARIANT (TAG: see tag).
arms() {
    local model="$1" setting="$2" prefix="$3"; shift 3
    # shellcheck disable=SC2046
    $SERRAY seeds "$model" --workdir "$W" $(setting_args "$setting") --n "$SEEDS" --run-prefix "$prefix-$(tag "$setting")" "$@"
}

# reference SETTING: the eGeMAPS linear SVM of every recipe's tables, run svm-TAG.
reference() {
    # shellcheck disable=SC2046
    $SERRAY train svm --workdir "$W" --features egemaps $(setting_args "$1") --run "svm-$(tag "$1")"
}

# keep_results NAME RUN[,RUN...]: report the runs (paired tests over speakers against the first)
# and copy the small, text outputs into results/NAME$RESULTS_SUFFIX beside the recipe.
keep_results() {
    local name="$1${RESULTS_SUFFIX:-}" runs="$2" out
    out="$W/reports/recipe-$(basename "$RECIPE")-$name"
    rm -rf "$RECIPE/results/$name" "$out"
    $SERRAY report "$W" --runs "$runs" --out "$out" >/dev/null
    mkdir -p "$RECIPE/results/$name"
    for f in summary.csv report.md; do
        [[ -f "$out/$f" ]] && cp "$out/$f" "$RECIPE/results/$name/"
    done
    find "$out" -maxdepth 1 -name '*.csv' -exec cp {} "$RECIPE/results/$name/" \;
    echo "recipes: results of $name in $RECIPE/results/$name"
}
