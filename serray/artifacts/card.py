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
        pooled = (rec.get("metrics") or {}).get("pooled") or {}
        lines.append(f"Run `{run}`: pooled test UA {_pct(pooled.get('ua'))}, WA {_pct(pooled.get('wa'))} over "
                     f"{pooled.get('n', '?')} test utterances; each fold's model scored only its own held-out test "
                     f"speakers, and its epoch/stopping was chosen on the fold's validation part. The configuration was "
                     f"fixed before the run: if it came from a search on the same data, this estimate is optimistic "
                     f"(use `serray tune --nested` for an unbiased one).")
    return lines or ["No run record was found; no test estimate is available."]


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
               out: Path | None, *, onnx: Mapping[str, Any] | None = None) -> str:
    """Markdown: data, protocol, label set, test estimate and its selection, transductive parts, versions
    (and with ``onnx``, :func:`serray.artifacts.onnx_export.export_onnx`'s result, the ONNX graphs)."""
    facts = _member_facts(out, members)
    rec = next(iter(records.values()), {})
    classes = facts[0]["classes"] if facts else rec.get("classes", [])
    inputs = facts[0]["inputs"] if facts else {}
    speaker = any(i.get("normalize") == "speaker" for f in facts for i in f["inputs"].values())
    versions = facts[0].get("versions", {}) if facts else rec.get("versions", {})
    lines = [
        f"# serray export: {'ensemble ' if kind == 'ensemble' else 'run '}`{name}`", "",
        f"{len(members)} kept fold model(s) of model(s) {sorted({f['model'] for f in facts})}, fused by the **sum of "
        f"their logits** (class probabilities = softmax of the sum). Load with `serray.load(DIR)` or run "
        f"`serray predict DIR AUDIO... --out predictions.csv`.", "",
        "## Data and protocol", "",
        f"- Corpora: {rec.get('corpora', '?')} ({rec.get('n_utterances', '?')} utterances)",
        f"- Label set: `{rec.get('labels', '?')}`; classes (logit order): {classes}",
        f"- Protocol: `{rec.get('protocol', '?')}` (k = {rec.get('k')}, fold seed {rec.get('fold_seed')}, "
        f"validation `{rec.get('validation')}`)",
        f"- Features: " + ", ".join(f"{role}: `{i.get('set')}` {i.get('params') or ''}" for role, i in inputs.items()),
        f"- Normalisation: `{rec.get('normalize', '?')}`", "",
        "## Test estimate", "", *_estimate(kind, name, selected, records), "",
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
