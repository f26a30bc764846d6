"""`serray fuse`: intermediate fusion (concatenated FE outputs + a new classifier) beside late fusion."""

from __future__ import annotations

from pathlib import Path

import click

from serray.commands._common import check_name_option, fail, split_names
from serray.workdir import Workdir


def _late_rows(members, subsets: dict[str, list[int]]) -> list[dict]:
    from serray.ensemble import evaluate_subset

    return [{"systems": label, "n": len(idx), "fusion": "late (sum of logits)", **evaluate_subset(members, idx, "logits")}
            for label, idx in subsets.items()]


def _pooled(results) -> dict[str, float]:
    """Pooled validation / test UA and WA of per-fold results (every fold's rows together)."""
    import numpy as np

    from serray import metrics

    out = {}
    for key, ys, lg in (("val", "validation_y", "validation_logits"), ("test", "test_y", "test_logits")):
        y = np.concatenate([getattr(r, ys) for r in results])
        pred = np.concatenate([getattr(r, lg) for r in results]).argmax(axis=1)
        labels = list(range(len(results[0].classes)))
        out[f"{key}_ua"] = metrics.unweighted_average_recall(y, pred, labels)
        out[f"{key}_wa"] = metrics.weighted_accuracy(y, pred)
    return out


@click.command(name="fuse")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--runs", required=True, help="Comma-separated runs whose seeds are the systems (e.g. from serray seeds).")
@click.option("--mode", type=click.Choice(["intermediate", "late"]), default="intermediate", show_default=True,
              help="intermediate: retrain the systems, concatenate their FE outputs, train a new classifier per fold "
                   "(reported beside late fusion); late: late fusion only (no retraining).")
@click.option("--k", "k_text", default=None, help="Also the validation-selected best late-fusion subset over these sizes "
              "(e.g. 1-9), and intermediate fusion of that subset.")
@click.option("--seed", default=0, show_default=True, help="Seed of the new emotion classifier.")
@click.option("--corpus", "corpora", multiple=True, help="The corpora the runs were trained on, if restricted (repeatable).")
@click.option("--threads", default=1, show_default=True, help="Torch threads while retraining and fusing (seeds trains with 1).")
@click.option("--name", default=None, help="Output folder under W/fusion (default from the runs).")
def command(workdir, runs, mode, k_text, seed, corpora, threads, name) -> None:
    """Intermediate vs late fusion of trained systems (paper 003, Table 5 shape).

    Late fusion sums the stored logits of all systems (full integration) and, with --k,
    of the subset chosen on pooled validation UA. Intermediate fusion retrains every
    system exactly as stored (checked: the retrained logits must equal the stored ones),
    concatenates their frozen FE outputs and trains a new emotion classifier on each
    fold's training part, early-stopped on its validation part. Nothing is selected on test.

    \b
    Example:
      serray fuse W --runs dmf-eg-vanilla,dmf-eg-mtl,dmf-eg-dann --mode intermediate --k 1-5
    """
    import logging

    import pandas as pd

    from serray.commands.ensemble import parse_k
    from serray.ensemble import members_from_predictions, run_ensemble_search
    from serray.predictions import read_predictions, run_classes
    from serray.training.resources import Resources

    logging.getLogger("serray").setLevel(min(logging.getLogger().level, logging.INFO))
    run_list = split_names(runs, "--runs")
    check_name_option("--name", name)
    k_values = parse_k(k_text) if k_text else []
    try:
        stored = read_predictions(workdir, run_list)
        members = members_from_predictions(stored, run_classes(workdir, run_list[0]))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    n = len(members.names)
    if k_values and max(k_values) > n:
        fail(f"--k {k_text} asks for subsets of up to {max(k_values)} systems but the runs hold only {n}; use --k 1-{n}")
    subsets = {f"all {n}": list(range(n))}
    if k_values:
        res = run_ensemble_search(members, k_values, selection="validation", top=1, resources=Resources(parallel=False),
                                  progress=False)
        best = res.best
        subsets[f"best k={int(best['k'])} (validation-selected)"] = [int(i) for i in best["indices"]]
    rows = _late_rows(members, subsets)
    single = pd.DataFrame([_late_rows(members, {m: [i]})[0] for i, m in enumerate(members.names)])
    max_diff = None
    if mode == "intermediate":
        rows += _intermediate_rows(workdir, run_list, stored, members, subsets, seed, corpora, threads)
        max_diff = max(r.pop("max_logit_diff") for r in rows if "max_logit_diff" in r)
    name = name or f"{'+'.join(run_list) if len(run_list) < 3 else f'{len(run_list)}runs'}-{mode}"
    _write_and_show(Workdir(workdir).fusion(name), pd.DataFrame(rows), single, members, subsets, run_list, mode, seed, max_diff)


def _write_and_show(out: Path, table, single, members, subsets, run_list, mode, seed, max_diff) -> None:
    """Write summary.csv / summary.json / single_systems.csv and echo the table."""
    from serray import io
    from serray.ensemble import VALIDATION_NOTE

    n = len(members.names)
    io.write_text(f"# {VALIDATION_NOTE}\n" + table.to_csv(index=False), out / "summary.csv")
    io.write_text(single.to_csv(index=False), out / "single_systems.csv")
    io.write_json({"runs": run_list, "mode": mode, "systems": members.names, "subsets": {k: [members.names[i] for i in v] for k, v in subsets.items()},
                   "rows": table.to_dict(orient="records"), "classifier_seed": seed, "max_retrained_logit_diff": max_diff,
                   "note": VALIDATION_NOTE}, out / "summary.json")
    shown = table.copy()
    for c in ("val_ua", "val_wa", "test_ua", "test_wa"):
        shown[c] = (100 * shown[c]).round(2)
    click.echo(f"{n} systems from {len(run_list)} run(s); selection on validation only")
    click.echo(shown.to_string(index=False))
    click.echo(f"\nsingle systems: test UA mean {100 * single['test_ua'].mean():.2f} % "
               f"(std {100 * single['test_ua'].std(ddof=1) if n > 1 else 0.0:.2f}, min {100 * single['test_ua'].min():.2f}, "
               f"max {100 * single['test_ua'].max():.2f})")
    if max_diff is not None:
        click.echo(f"retrained systems vs stored logits: max abs difference {max_diff:.2e}")
    click.echo(f"results: {out}")


def _intermediate_rows(workdir, run_list, stored, members, subsets, seed, corpora, threads) -> list[dict]:
    """Retrain every system once, then one new classifier per subset (rows like the late ones)."""
    import logging

    from serray.ensemble.intermediate import fuse_intermediate, load_systems, system_embeddings

    log = logging.getLogger("serray.fuse")
    try:
        systems = {s.name: s for s in load_systems(workdir, run_list, stored)}
        embeddings, exp = {}, None
        for i, name in enumerate(members.names):
            log.info("FE outputs of system %d/%d: %s", i + 1, len(members.names), name)
            embeddings[name], e = system_embeddings(workdir, systems[name], stored, corpora=corpora or None, threads=threads)
            exp = exp or e
    except (FileNotFoundError, ValueError, LookupError) as exc:
        fail(str(exc))
    worst = max(e.max_logit_diff for e in embeddings.values())
    if worst > 1e-3:
        log.warning("retrained systems differ from the stored ones (max logit difference %.3g): other threads, device "
                    "or library versions; the intermediate fusion uses the retrained systems' FE outputs", worst)
    rows = []
    for label, idx in subsets.items():
        results, secs = fuse_intermediate(exp, [embeddings[members.names[i]] for i in idx], seed=seed, threads=threads)
        rows.append({"systems": label, "n": len(idx), "fusion": "intermediate (concat FE + new EC)", **_pooled(results),
                     "max_logit_diff": worst})
        log.info("intermediate fusion of %s: %.1f s", label, secs)
    return rows
