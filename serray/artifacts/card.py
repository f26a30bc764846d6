"""The model card (``README.md``) of a ``serray export``.

Example:
    >>> "Test estimate" in model_card("run", "r", {}, {}, [], None)
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["model_card"]


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f} %"


def _member_facts(out: Path | None, members: Sequence[str]) -> list[dict[str, Any]]:
    if out is None:
        return []
    return [json.loads((out / m / "model.json").read_text()) for m in members]


def _estimate(kind: str, name: str, selected: Mapping[str, Any], records: Mapping[str, dict]) -> list[str]:
    """The honest test estimate and how it was selected."""
    if kind == "ensemble":
        return [f"Ensemble search `{name}`: the subset of k = {selected.get('k')} members chosen on **validation** "
                f"scores (selection: {selected.get('selection')}); validation UA {_pct(selected.get('val_ua'))}, "
                f"test UA {_pct(selected.get('test_ua'))}, test WA {_pct(selected.get('test_wa'))}.",
                "", f"Selection note: {selected.get('note')}"]
    lines = []
    for run, rec in records.items():
        lines.append(f"Run `{run}`: {_run_scores(rec)}; each fold's model scored only its own held-out test "
                     f"speakers, and its epoch/stopping was chosen on the fold's validation part. The configuration was "
                     f"fixed before the run: if it came from a search on the same data, this estimate is optimistic "
                     f"(use `serray tune --nested` for an unbiased one).")
    return lines or ["No run record was found; no test estimate is available."]


def _run_scores(rec: Mapping[str, Any]) -> str:
    """A run record's test scores: pooled over folds (``serray train``), or their mean and
    spread over seeds (``serray seeds``, each seed pooled over folds)."""
    m = rec.get("metrics") or {}
    if "pooled" not in m and "test_ua_mean" in m:
        return (f"test UA {_pct(m['test_ua_mean'])} (standard deviation {_pct(m.get('test_ua_std'))}), WA "
                f"{_pct(m.get('test_wa_mean'))}, means over {len(rec.get('seeds') or [])} seed(s), each seed's test "
                f"predictions pooled over the folds")
    pooled = m.get("pooled") or {}
    return f"pooled test UA {_pct(pooled.get('ua'))}, WA {_pct(pooled.get('wa'))} over {pooled.get('n', '?')} test utterances"


def _refit_lines(refit: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The model card's section on models retrained on all data (``serray export --refit all-data``)."""
    lines = ["## Refit on all training data", "",
             "Each member (configuration and seed) was trained once more, with its recorded config and seed, on the "
             "union of its run's folds' training and validation parts, without early stopping and without a validation "
             "part. Torch members trained for the median of the folds' best (early-stopped) epochs, rounded half up; "
             "a multi-stage plan trained each stage for the median over folds of the epochs that stage handed on "
             "(a model's own per-group selection inside a stage is replaced by that count); "
             "scikit-learn members were fitted once. Normalisation statistics come from all of that training data.", ""]
    for member, info in refit.items():
        epochs = (f"{info['epochs']} epoch(s) (folds' best epochs: {info['fold_best_epochs']})" if info.get("epochs")
                  else "one fit")
        if info.get("stage_epochs"):
            epochs = (f"{info['epochs']} epoch(s), per stage {info['stage_epochs']} (folds' epochs per stage: "
                      f"{info['fold_stage_epochs']})")
        lines.append(f"- `{member}` ({info['model']}): {epochs}; {info['n_utterances']} utterances of "
                     f"{info['n_speakers']} speakers, corpora {info['corpora']}")
    return [*lines, ""]


def _refit_caveat(refit: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the test estimate of a refit export is (and is not)."""
    held = max(int(info.get("n_held_out") or 0) for info in refit.values())
    seen = (f"The refit models never saw the {held} utterances that only the test parts held (e.g. the test corpus of "
            f"a cross-corpus run), but no held-out data scored them either." if held else
            "The refit models were trained on every one of those utterances, the test speakers included.")
    return ["**The estimate below is the cross-validation estimate of the training procedure** (the fold models of "
            "the same configurations and seeds, each scored on its fold's held-out test part, and how the configuration "
            f"was selected). **It is not a measurement of the refit models in this folder.** {seen}", ""]


def _onnx_section(onnx: Mapping[str, Any] | None) -> list[str]:
    """``--onnx``: which members have ``model.onnx`` and, one line each, why the others have none."""
    if onnx is None:
        return []
    done, skipped = onnx.get("exported", {}), onnx.get("not_exported", {})
    return ["## ONNX", "", f"{len(done)} member(s) have `model.onnx` next to their weights: utterance logits of the "
            "member's inputs **after** its normalisation; the member's `onnx.json` lists the graph's inputs (names, "
            "shapes, dynamic axes), the normalisation to apply first and the class order. Fuse by summing the logits.",
            "", *[f"- `{m}`: no ONNX graph: {reason}" for m, reason in skipped.items()], ""]


def model_card(kind: str, name: str, selected: Mapping[str, Any], records: Mapping[str, dict], members: Sequence[str],
               out: Path | None, refit: Mapping[str, Mapping[str, Any]] | None = None, *,
               onnx: Mapping[str, Any] | None = None) -> str:
    """Markdown: data, protocol, label set, test estimate and its selection, transductive parts, versions
    (and, for ``refit`` members, how they were retrained and what the estimate then means; with ``onnx``,
    :func:`serray.artifacts.onnx_export.export_onnx`'s result, the ONNX graphs)."""
    facts = _member_facts(out, members)
    rec = next(iter(records.values()), {})
    classes = facts[0]["classes"] if facts else rec.get("classes", [])
    inputs = facts[0]["inputs"] if facts else {}
    speaker = any(i.get("normalize") == "speaker" for f in facts for i in f["inputs"].values())
    versions = facts[0].get("versions", {}) if facts else rec.get("versions", {})
    what = ("model(s) retrained on all training data, one per configuration and seed," if refit
            else "kept fold model(s)")
    if len(set(members)) < len(members):  # a greedy ensemble's member picked several times
        what += f" listed {len(members)} times in the fusion (a member picked k times counts k times),"
    lines = [
        f"# serray export: {'ensemble ' if kind == 'ensemble' else 'run '}`{name}`", "",
        f"{len(set(members))} {what} of model(s) {sorted({f['model'] for f in facts})}, fused by the **sum of "
        f"their logits** (class probabilities = softmax of the sum). Load with `serray.load(DIR)` or run "
        f"`serray predict DIR AUDIO... --out predictions.csv`.", "",
        "## Data and protocol", "",
        f"- Corpora: {rec.get('corpora') or (rec.get('settings') or {}).get('corpora', '?')} "
        f"({rec.get('n_utterances', '?')} utterances)",
        f"- Label set: `{rec.get('labels', '?')}`; classes (logit order): {classes}",
        f"- Protocol: `{rec.get('protocol', '?')}` (k = {rec.get('k')}, fold seed {rec.get('fold_seed')}, "
        f"validation `{rec.get('validation')}`)",
        f"- Features: " + ", ".join(f"{role}: `{i.get('set')}` {i.get('params') or ''}" for role, i in inputs.items()),
        f"- Normalisation: `{rec.get('normalize', '?')}`", "",
        *(_refit_lines(refit) if refit else []),
        "## Test estimate", "", *(_refit_caveat(refit) if refit else []), *_estimate(kind, name, selected, records), "",
        "## What is transductive", "",
        ("Inputs are standardised per speaker with that speaker's own (unlabelled) statistics, including the test "
         "speakers': predictions need a `speaker` column (a manifest) and are marked transductive."
         if speaker else "Nothing: every input is standardised with statistics of the training part only (or of "
         "each utterance alone)."), "",
        "## Library versions", "", *[f"- {k}: {v}" for k, v in sorted(versions.items())], "", *_onnx_section(onnx),
        "## Files", "", "`export.json` lists every file with its sha256; loading refuses a mismatch, a missing member "
        "and any file that could execute code (weights are safetensors, arrays npz without pickle).", "",
    ]
    return "\n".join(lines)
