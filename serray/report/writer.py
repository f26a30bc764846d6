"""``serray report``: one folder with report.md, report.html, tables (CSV, LaTeX) and figures.

:func:`write_report` resolves the systems (:mod:`serray.report.sources`), scores them
(:mod:`serray.report.comparison`), runs the paired tests when there are two or more,
renders the models' per-fold records generically (:mod:`serray.report.model_records`),
adds Tune progress for ``tune`` folders, and writes every block to Markdown and to one
self-contained HTML page (:mod:`serray.report.document`).

Files (``out`` = ``W/reports/<run>`` for one system, ``W/reports/comparison`` otherwise):
``report.md``, ``report.html``, ``summary.csv`` (numbers as fractions), ``table.tex``,
``pairwise.csv``/``pairwise.tex`` and ``per_speaker.csv`` (two or more systems),
``per_fold__<slug>.csv``, ``confusion__<slug>.csv`` and every figure as PNG and PDF.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from serray import io
from serray.report import comparison as cmp
from serray.report import figures
from serray.report.document import Document
from serray.report.model_records import collect, records_of_run
from serray.report.sources import System, resolve_systems
from serray.report.statistics import CORRECTION_NAMES, CORRECTIONS, MARKS_NOTE
from serray.workdir import Workdir

__all__ = ["ReportOptions", "write_report", "slug", "latex_table"]

log = logging.getLogger(__name__)

#: Longest per-(seed, fold) model-record table shown in full (longer ones are summarised).
MAX_ROWS = 20

EMBEDDINGS_NOTE = ("2-D embedding plot (t-SNE): skipped, because serray stores no penultimate-layer "
                   "embeddings (the predictions store holds logits only).")


@dataclass
class ReportOptions:
    """How to report (the CLI's options).

    Attributes:
        split: ``test`` or ``validation``.
        by: Manifest columns for per-group UA.
        pair_by: Units of the paired tests: ``speaker`` or ``fold``.
        test: Test behind the significance marks: ``wilcoxon`` or ``ttest``.
        n_boot: Bootstrap resamples of the UA difference.
        seed: Bootstrap seed.
        compare: Require two or more systems.
        correction: Multiple-comparison correction of the all-pairs p-values (and of the
            marks): ``holm`` (Holm-Bonferroni), ``bh`` (Benjamini-Hochberg) or ``none``.
    """

    split: str = "test"
    by: Sequence[str] = ("gender", "corpus")
    pair_by: str = "speaker"
    test: str = "wilcoxon"
    n_boot: int = 2000
    seed: int = 0
    compare: bool = False
    correction: str = "holm"

    def __post_init__(self) -> None:
        for key, value, choices in (("split", self.split, ("test", "validation")), ("pair_by", self.pair_by, ("speaker", "fold")),
                                    ("test", self.test, ("wilcoxon", "ttest")), ("correction", self.correction, CORRECTIONS)):
            if value not in choices:
                raise ValueError(f"{key} must be one of {choices}, got {value!r}")


def slug(text: str) -> str:
    """File-name-safe form of a system name.

    Example:
        >>> slug("ensemble:mlp/x k=3")
        'ensemble_mlp__x_k=3'
    """
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text.replace("/", "__"))


def _system_slug(s: System) -> str:
    if s.kind == "ensemble":
        return slug(s.name)
    cids = sorted(s.predictions["config_id"].unique())
    return slug(f"{s.source}__{cids[0]}") if len(cids) == 1 else slug(s.name)


def latex_table(frame: pd.DataFrame) -> str:
    """LaTeX tabular of a formatted table (± as $\\pm$, stars as superscripts)."""
    tex = frame.to_latex(index=False, escape=True, column_format="l" + "r" * (frame.shape[1] - 1))
    tex = tex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")
    return re.sub(r"(?<![\\$])(\*{1,3})", r"$^{\1}$", tex)


def _manifest(workdir: Path) -> pd.DataFrame | None:
    from serray.manifest import ManifestError, load_manifests

    try:
        return load_manifests(workdir)
    except ManifestError:
        log.warning("no manifests in %s: per-group and per-speaker UA are skipped", workdir)
        return None


def _systems_table(systems: Sequence[System]) -> pd.DataFrame:
    """One row per system; an ensemble's model, features, ... list its members' distinct values."""
    rows = []
    for s in systems:
        row = {"system": s.label, "kind": s.kind}
        for key in ("model", "features", "protocol", "normalize"):
            row[key] = ", ".join(dict.fromkeys(str(r[key]) for r in s.records if r.get(key) not in (None, "")))
        rows.append({**row, "seeds": s.n_seeds, "config_id": ",".join(sorted(s.predictions["config_id"].unique()))})
    return pd.DataFrame(rows)


def _caveat_lines(systems: Sequence[System]) -> list[str]:
    return [f"- **{s.name}**: {c}" for s in systems for c in s.caveats]


def _summary_section(doc: Document, ms: list, tests: pd.DataFrame, opts: ReportOptions, out: Path) -> None:
    frame = cmp.summary_frame(ms)
    caveated = [m.system.label for m in ms if m.system.caveats]
    marks, note = cmp.marks_against_best(frame, tests, opts.test, exclude=caveated)
    table = cmp.format_summary(frame, marks)
    io.write_text(frame.to_csv(index=False), out / "summary.csv")
    io.write_text(latex_table(table), out / "table.tex")
    doc.heading("Summary").text(cmp.SUMMARY_NOTE).table(table)
    if note:
        doc.text(note)
    gender_cols = [c for c in frame.columns if c.startswith("ua_gender=")]
    if gender_cols:
        bars = (100 * frame.set_index("system")[gender_cols].T).rename(index=lambda c: c.split("=", 1)[1])
        png = figures.bars_figure(bars, f"UA per gender ({opts.split} split, mean over seeds)", out / "per_gender")
        doc.figure(png.name, "UA per gender (mean over seeds)")
    corpus_cols = [c for c in frame.columns if c.startswith("ua_corpus=")]
    if len(corpus_cols) > 1:
        bars = (100 * frame.set_index("system")[corpus_cols].T).rename(index=lambda c: c.split("=", 1)[1])
        png = figures.bars_figure(bars, f"UA per corpus ({opts.split})", out / "per_corpus")
        doc.figure(png.name, "UA per corpus (mean over seeds)")


def _comparison_section(doc: Document, ms: list, tests: pd.DataFrame, unit: str, opts: ReportOptions, out: Path) -> None:
    table = cmp.format_pairwise(tests)
    io.write_text(tests.to_csv(index=False), out / "pairwise.csv")
    io.write_text(latex_table(table), out / "pairwise.tex")
    doc.heading("Paired tests")
    doc.text(f"Every pair of systems over {unit}s ({opts.split} split; per-{unit} UA is the mean over seeds): "
             f"paired t-test and Wilcoxon signed-rank test (scipy) on the per-{unit} UAs, with the number of pairs; "
             f"ΔUA pooled = UA(A) - UA(B) pooled over folds, with a {int(100 * 0.95)}% percentile bootstrap interval "
             f"over {unit}s ({opts.n_boot} resamples, seed {opts.seed}). {_correction_text(len(tests), opts.correction)}")
    doc.table(table)
    per_unit = cmp.per_unit_frame(ms, unit)
    io.write_text(per_unit.to_csv(), out / f"per_{unit}.csv")
    doc.heading(f"UA per {unit} (%)", 3).table(per_unit, index=True)
    png = figures.bars_figure(per_unit, f"UA per {unit} ({opts.split})", out / f"per_{unit}")
    doc.figure(png.name, f"UA per {unit} (mean over seeds)")


def _correction_text(n_pairs: int, correction: str) -> str:
    """The report's sentence on multiple comparisons."""
    if correction == "none":
        return f"{MARKS_NOTE} on the raw p-values; no correction for multiple comparisons ({n_pairs} pairs per test)."
    family = ("family-wise error rate" if correction == "holm" else "false discovery rate")
    return (f"p adj. = p-values adjusted for multiple comparisons by {CORRECTION_NAMES[correction]} over the {n_pairs} "
            f"pairs (each test its own family; controls the {family}); {MARKS_NOTE} on the adjusted p-values.")


def _system_section(doc: Document, m: cmp.SystemMetrics, opts: ReportOptions, out: Path) -> None:
    s, rep = m.system, m.report
    name = _system_slug(s)
    doc.heading(s.label)
    if s.caveats:
        doc.text("Caveats: " + "; ".join(s.caveats) + ".")
    io.write_text(rep.per_fold.to_csv(index=False), out / f"per_fold__{name}.csv")
    per_fold = rep.per_fold.groupby("fold")[["n", "ua", "wa", "f1"]].mean()
    per_fold[["ua", "wa", "f1"]] = (100 * per_fold[["ua", "wa", "f1"]]).round(1)
    per_fold["n"] = per_fold["n"].round().astype(int)
    doc.table(per_fold, "Per fold (UA/WA/F1 in %, mean over seeds):", index=True)
    cm = pd.DataFrame(rep.confusion, index=[f"true {c}" for c in s.classes], columns=[f"pred {c}" for c in s.classes])
    io.write_text(cm.to_csv(), out / f"confusion__{name}.csv")
    title = f"{s.label} ({opts.split}, pooled over folds and {s.n_seeds} seed(s), UA {100 * m.summary['ua_pooled_mean']:.1f} %)"
    png = figures.confusion_figure(rep.confusion, s.classes, title, out / f"confusion__{name}")
    doc.figure(png.name, f"Confusion matrix of {s.label}: counts and row-normalised")
    if s.kind == "ensemble":
        _ensemble_section(doc, s, out, name)
        return
    if "best_epoch_median" in m.summary:
        doc.text(_epochs_text(m.summary, any((r.get("config") or {}).get("early_stop") == "none" for r in s.records)))
    cpus = _cpus_text(s.records)
    if cpus:
        doc.text(cpus)
    for rec in s.records:
        _model_records_section(doc, s, rec, out, name)


def _epochs_text(summary: dict, fixed: bool) -> str:
    """One line on the epochs early stopping chose (:func:`serray.report.comparison.epoch_summary`);
    ``fixed``: the run trained a fixed epoch count (``early_stop=none``)."""
    n, share = summary["fold_models_with_epochs"], summary["best_at_last_epoch"]
    span = f"{summary['best_epoch_min']}-{summary['best_epoch_max']}"
    if fixed:
        return f"Epochs: a fixed count (early_stop=none, the last epoch's weights), {span} over {n} fold model(s)."
    text = (f"Epochs: early stopping kept epoch {summary['best_epoch_median']:g} (median; range {span}) over {n} "
            f"fold model(s); {round(share * n)} of {n} still improved on their last epoch")
    return text + (" (the epoch budget, not the validation score, ended most of them: more epochs may help)."
                   if share > 0.5 else ".")


def _cpus_text(records: Sequence[dict]) -> str | None:
    """One line naming the CPUs the torch folds trained on (the records' ``cpus``: a list in a
    train record, seed -> list in a seeds record), or ``None`` where none is recorded.

    Example:
        >>> _cpus_text([{"cpus": {"0": ["A"], "1": ["A"], "2": ["B"]}}]).split(". ")[0]
        'Trained on: A (seeds 0, 1); B (seed 2)'
        >>> _cpus_text([{"seed": 3, "cpus": None}]) is None
        True
    """
    seeds_of: dict[str, set[str]] = {}
    for rec in records:
        cpus = rec.get("cpus") or {}
        for seed, names in (cpus.items() if isinstance(cpus, dict) else [(rec.get("seed", "?"), cpus)]):
            for cpu in names:
                seeds_of.setdefault(cpu, set()).add(str(seed))
    if not seeds_of:
        return None
    parts = [f"{cpu} (seed{'s' if len(seeds) > 1 else ''} {', '.join(sorted(seeds, key=lambda x: (len(x), x)))})"
             for cpu, seeds in sorted(seeds_of.items())]
    tail = (" The same seed rounds differently on another CPU model, so these seeds reproduce bit for bit only on"
            " the CPU each was trained on." if len(seeds_of) > 1 else "")
    return "Trained on: " + "; ".join(parts) + "." + tail


def _ensemble_section(doc: Document, s: System, out: Path, name: str) -> None:
    bpk = s.extra.get("best_per_k")
    summary = s.extra.get("summary", {})
    doc.text(f"Ensemble from `{s.source}`: {summary.get('method', '?')} search, fusion {summary.get('fusion', '?')}, "
             f"selection {summary.get('selection', '?')}. {summary.get('note', '')}")
    tag = f" [{', '.join(sorted({c.split(':')[0] for c in s.caveats}))}]" if s.caveats else ""
    if bpk is not None and len(bpk):
        single = Path(s.source) / "single_members.csv"
        single_ua = float(pd.read_csv(single)["test_ua"].mean()) if single.exists() else None
        png = figures.ensemble_curve_figure(bpk, f"{s.name}{tag}: UA vs ensemble size, validation-test gap",
                                            out / f"ensemble_size__{name}", single_ua, summary.get("selection", "validation"))
        doc.figure(png.name, f"UA against ensemble size for {s.label}")
    mix = s.extra.get("membership_mix")
    if mix is not None and len(mix) and mix.shape[1] > 1:
        png = figures.membership_figure(mix, f"{s.name}{tag}: membership mix of the best subset per k", out / f"ensemble_mix__{name}")
        doc.figure(png.name, f"Members per run in the best subset of each k ({s.label})")


def _model_records_section(doc: Document, s: System, record: dict, out: Path, name: str) -> None:
    parts = collect(records_of_run(record))
    if parts.empty:
        return
    run = record.get("run", s.name)
    doc.heading(f"Model records: {run}", 3)
    doc.text("What the model reported per fold (`fold_record()`), rendered generically.")
    if parts.scalars.shape[1] > 2:
        csv = f"model__{name}__scalars.csv"
        io.write_text(parts.scalars.to_csv(index=False), out / csv)
        if len(parts.scalars) <= MAX_ROWS:
            doc.table(parts.scalars.round(4), "Scalars per seed and fold:")
        else:
            doc.table(parts.scalar_summary().round(4), f"Numeric scalars over {len(parts.scalars)} (seed, fold) records "
                      f"(every record in `{csv}`):", index=True)
    for path, frame in parts.vectors.items():
        if len(frame) <= MAX_ROWS:
            doc.table(frame.round(4), f"`{path}` per seed and fold:")
        else:
            doc.table(frame.drop(columns=["seed", "fold"]).agg(["mean", "std"]).round(4),
                      f"`{path}` over {len(frame)} (seed, fold) records:", index=True)
        heat = frame.set_index(["seed", "fold"])
        heat.index = [f"s{a}/f{b}" for a, b in heat.index]
        png = figures.heatmap_figure(heat, f"{s.label}: {path}", out / f"model__{name}__{slug(path)}",
                                     xlabel="position", ylabel="seed/fold")
        doc.figure(png.name, f"{path} of {s.label} per seed and fold")
    for path in parts.matrices:
        mean = parts.matrix_mean(path)
        doc.table(mean.round(4), f"`{path}`, mean over {len(parts.matrices[path])} fold record(s):", index=True)
        png = figures.heatmap_figure(mean, f"{s.label}: {path} (mean over folds)", out / f"model__{name}__{slug(path)}")
        doc.figure(png.name, f"{path} of {s.label}, mean over folds and seeds")


def _run_notes(workdir: Path, systems: Sequence[System]) -> list[str]:
    return [f"{s.name}: {n}" for s in systems for r in s.records for n in (r.get("notes") or [])]


def _default_out(workdir: Path, names: Sequence[str], tune: Sequence[str]) -> Path:
    """``W/reports/<run>``, ``W/reports/tune__<experiment>`` or ``W/reports/comparison``."""
    w = Workdir(workdir)
    if len(names) == 1:
        return w.report(slug(names[0]))
    if not names and len(tune) == 1:
        return w.report(f"tune__{Path(tune[0]).name}")
    return w.report("comparison")


def write_report(
    workdir: str | Path,
    runs: Sequence[str] | None = None,
    *,
    split: str = "test",
    by: Sequence[str] = ("gender", "corpus"),
    out: str | Path | None = None,
    tune: Sequence[str | Path] = (),
    options: ReportOptions | None = None,
) -> Path:
    """Write the report folder (see the module docstring); returns it.

    Args:
        workdir: Work directory (predictions store, runs, manifests).
        runs: System names (see :mod:`serray.report.sources`); default every run in the
            store unless only ``tune`` folders are given.
        split, by: As in :class:`ReportOptions` (``options`` wins when given).
        out: Output folder.
        tune: Tune experiment folders whose progress to show.

    Raises:
        FileNotFoundError: Empty store, unknown runs, or a tune folder without trials.
        ValueError: Different class sets, ambiguous runs, too few systems for ``compare``.
    """
    from serray.predictions import list_runs

    w = Path(workdir)
    opts = options or ReportOptions(split=split, by=tuple(by))
    names = list(runs) if runs else ([] if tune else list_runs(w))
    if not names and not tune:
        raise FileNotFoundError(f"{w}: the predictions store is empty; run `serray train` first")
    if opts.compare and len(names) < 2:
        raise ValueError(f"--compare needs at least two runs in --runs, got {len(names)}: {names}")
    systems = resolve_systems(w, names)
    out = Path(out) if out else _default_out(w, names, [str(t) for t in tune])
    doc = Document(f"serray report ({opts.split} split)" if systems else "serray report: Tune progress")
    listed = f"Systems: {', '.join(s.label for s in systems)}." if systems else f"Tune experiments: {', '.join(Path(t).name for t in tune)}."
    doc.text(f"Work directory: `{w}`. {listed}")
    if systems:
        _systems_body(doc, systems, w, opts, out)
    for t in tune:
        from serray.report.tune_progress import tune_section

        doc.extend(tune_section(Path(t), out))
    io.write_text(doc.markdown(), out / "report.md")
    io.write_text(doc.html(out), out / "report.html")
    log.info("report written to %s", out)
    return out


def _systems_body(doc: Document, systems: list[System], w: Path, opts: ReportOptions, out: Path) -> None:
    manifest = _manifest(w)
    doc.table(_systems_table(systems), "Systems compared:")
    caveats = _caveat_lines(systems)
    if caveats:
        doc.heading("Optimistic or transductive results").text(
            "These systems' numbers are not held-out, speaker-independent estimates:\n\n" + "\n".join(caveats))
    ms = [cmp.system_metrics(s, manifest, opts.split, opts.by) for s in systems]
    unit = opts.pair_by if manifest is not None and "speaker" in manifest.columns else "fold"
    tests = (cmp.pairwise_tests(ms, manifest, unit, opts.split, opts.n_boot, opts.seed, opts.correction)
             if len(ms) > 1 else pd.DataFrame())
    _summary_section(doc, ms, tests, opts, out)
    if len(ms) > 1:
        _comparison_section(doc, ms, tests, unit, opts, out)
    doc.text(EMBEDDINGS_NOTE)
    notes = _run_notes(w, systems)
    if notes:
        doc.heading("Notes").text("\n".join(f"- {n}" for n in notes))
    for m in ms:
        _system_section(doc, m, opts, out)
