"""`serray ensemble`: search the best late-fusion ensemble of stored seeds."""

from __future__ import annotations

from pathlib import Path

import click

from serray.commands._common import (
    address_option, check_name_option, fail, resources_from_flags, split_names, track_option, track_results, track_target,
)
from serray.workdir import Workdir


def parse_k(text: str) -> list[int]:
    """``"1-9"`` -> [1..9]; ``"3,5,7"`` -> [3, 5, 7]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.partition("-")
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a range like 1-9 or a list like 3,5,7", param_hint="--k") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{text!r}: subset sizes must be >= 1", param_hint="--k")
    return sorted(set(out))


def plot_ua_vs_k(best_per_k, single, out: Path, note: str, selection: str = "validation") -> list[str]:
    """Best ensemble's validation and test UA per k, with the mean single member.

    Returns:
        The legend labels, in plotting order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from serray import io

    from serray.report.figures import curve_labels

    val_label, test_label = curve_labels(selection)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(best_per_k["k"], 100 * best_per_k["val_ua"], "o-", label=val_label)
    ax.plot(best_per_k["k"], 100 * best_per_k["test_ua"], "s-", label=test_label)
    ax.axhline(100 * single["test_ua"].mean(), color="grey", ls="--", label="mean single member, test UA")
    ax.set_xlabel("ensemble size k")
    ax.set_ylabel("UA (%)")
    ax.grid(alpha=0.3)
    labels = [t.get_text() for t in ax.legend(fontsize=8).get_texts()]
    ax.set_title(note if len(note) < 70 else note[:67] + "...", fontsize=7)
    fig.tight_layout()
    with io.atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return labels


def write_ensemble_folder(res, members, out_dir: Path):
    """Write an ensemble result and its companion tables into ``out_dir``.

    Files: those of :meth:`~serray.ensemble.runner.EnsembleResult.save`, plus
    ``single_members.csv`` (each member alone), ``best_per_k.csv``,
    ``membership_mix.csv`` (members per run in the best subset of each k) and, for an
    exhaustive search, ``ua_vs_k.png``. ``serray ensemble`` and ``serray demo`` both
    write through here, so their folders hold the same files.

    Returns:
        ``(out, single, mix)``: the folder, the single-member scores and the mix table.
    """
    import pandas as pd

    from serray import io
    from serray.ensemble import evaluate_subset

    out = res.save(out_dir)
    single = pd.DataFrame([{"member": m, "variant": v, **evaluate_subset(members, [i], res.fusion)}
                           for i, (m, v) in enumerate(zip(members.names, members.variant))])
    io.write_text(single.to_csv(index=False), out / "single_members.csv")
    bpk = res.best_per_k
    io.write_text(bpk.assign(members=bpk["members"].map(" ".join)).to_csv(index=False), out / "best_per_k.csv")
    mix_rows = []
    for _, row in bpk.iterrows():
        counts = pd.Series([members.variant[i] for i in row["indices"]]).value_counts()
        mix_rows.append({"k": int(row["k"]), **counts.to_dict()})
    mix = pd.DataFrame(mix_rows).fillna(0)
    io.write_text(mix.to_csv(index=False), out / "membership_mix.csv")
    if res.method == "exhaustive":
        plot_ua_vs_k(bpk, single, out / "ua_vs_k.png", res.note, res.selection)
    return out, single, mix


@click.command(name="ensemble")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--runs", required=True, help="Comma-separated runs whose seeds are the candidate members (e.g. from serray seeds).")
@click.option("--k", "k_text", default="1-5", show_default=True, help="Subset sizes: a range 1-9 or a list 3,5,7 (exhaustive).")
@click.option("--fusion", type=click.Choice(["logits", "prob", "vote"]), default="logits", show_default=True,
              help="logits: sum of logits (paper 003); prob: mean of probabilities; vote: majority vote.")
@click.option("--selection", type=click.Choice(["validation", "test-optimistic"]), default="validation", show_default=True,
              help="Score subsets on pooled validation UA (honest) or on test UA (optimistic; flagged in every output).")
@click.option("--method", type=click.Choice(["exhaustive", "greedy"]), default="exhaustive", show_default=True,
              help="Every k-subset, or greedy forward selection with replacement (Caruana et al. 2004).")
@click.option("--max-size", default=None, type=int, help="Greedy: number of additions (default: number of members).")
@click.option("--nested", is_flag=True,
              help="Also estimate the whole search nested: per outer fold, select without that fold's test "
                   "speakers and score the choice on them (exhaustive, validation selection; one search per fold).")
@click.option("--top", default=10, show_default=True, help="Subsets kept per k.")
@click.option("--name", default=None, help="Output folder name under W/ensemble (default from the runs and options).")
@click.option("--num-cpus", default=None, type=int, help="Cores to use (default all).")
@click.option("--backend", type=click.Choice(["auto", "numpy", "torch"]), default="auto", show_default=True)
@address_option
@track_option
def command(workdir, runs, k_text, fusion, selection, method, max_size, nested, top, name, num_cpus, backend, address,
            track) -> None:
    """Search every k-subset of the runs' seeds for the best late-fusion ensemble.

    Writes under W/ensemble/NAME: leaderboard (members, k, validation UA, test UA, WA),
    best subset per k, a plot of UA against k, and the membership mix by run (variant).

    \b
    Example:
      serray ensemble W --runs mlp-base --k 1-6
    """
    import logging

    from serray.ensemble import run_ensemble_search

    logging.getLogger("serray").setLevel(min(logging.getLogger().level, logging.INFO))
    run_list = split_names(runs, "--runs")
    check_name_option("--name", name)
    target = track_target(track, workdir)
    k_values = parse_k(k_text)
    if nested and (method != "exhaustive" or selection != "validation"):
        fail("--nested estimates an exhaustive search selected on validation; drop --nested or use "
             "--method exhaustive --selection validation")
    members = _members(workdir, run_list)
    n = len(members.names)
    if method == "exhaustive" and max(k_values) > n:
        fail(f"--k {k_text} asks for subsets of up to {max(k_values)} members but the runs hold only {n}; use --k 1-{n}")
    try:
        res = run_ensemble_search(
            members, k_values if method == "exhaustive" else None, method=method, fusion=fusion, selection=selection,
            top=top, resources=resources_from_flags(address=address, num_cpus=num_cpus), backend=backend,
            max_size=max_size,
        )
    except ValueError as exc:
        fail(str(exc))
    name = name or f"{'+'.join(run_list) if len(run_list) < 3 else f'{len(run_list)}runs'}-{method}-{fusion}-{selection}"
    out, single, mix = write_ensemble_folder(res, members, Workdir(workdir).ensemble(name))
    click.echo(f"{n} members from {len(run_list)} run(s); {method} search, fusion={fusion}, selection={selection}")
    click.echo(f"NOTE: {res.note}")
    _echo_result(res, members, run_list, single, mix)
    if nested:
        _echo_nested(members, k_values, fusion, out)
    track_results(workdir, [f"ensemble:{out.name}"], target)
    click.echo(f"results: {out}")


def _members(workdir: str, run_list: list[str]):
    """The runs' seeds as ensemble members (a one-line error when a run is missing or they differ)."""
    from serray.ensemble import members_from_predictions
    from serray.predictions import read_predictions, run_classes

    try:
        df = read_predictions(workdir, run_list)
        return members_from_predictions(df, run_classes(workdir, run_list[0]))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _echo_result(res, members, run_list: list[str], single, mix) -> None:
    """Print the best subset per k, the membership mix and the selected ensemble against single members."""
    import os

    shown = res.best_per_k[["k", "val_ua", "test_ua", "test_wa", "members"]].copy()
    shown.insert(3, "gap", shown["val_ua"] - shown["test_ua"])  # validation minus test: how far selection flatters
    for c in ("val_ua", "test_ua", "gap", "test_wa"):
        shown[c] = (100 * shown[c]).round(2)
    prefix = os.path.commonprefix(run_list) if len(run_list) > 1 else ""

    def short(m: str) -> str:  # "run/config_id/seed" -> "<run minus common prefix>/seed"
        run, _, seed = m.split("/")
        return f"s{seed}" if len(run_list) == 1 else f"{run[len(prefix):] or run}/s{seed}"

    shown["members"] = shown["members"].map(lambda ms: " ".join(short(m) for m in ms))
    click.echo("\nBest subset per k (UA/WA in %; gap = validation UA - test UA):")
    click.echo(shown.to_string(index=False))
    if len(set(members.variant)) > 1:
        click.echo("\nMembership mix of the best subset per k (members per run):")
        click.echo(mix.to_string(index=False))
    best = res.best
    click.echo(
        f"\nsingle members: test UA mean {100 * single['test_ua'].mean():.2f} % "
        f"(min {100 * single['test_ua'].min():.2f}, max {100 * single['test_ua'].max():.2f}); "
        f"selected ensemble (k={int(best['k'])}): test UA {100 * best['test_ua']:.2f} %, "
        f"{'validation' if res.selection == 'validation' else 'TEST (optimistic)'} UA {100 * best['score']:.2f} %"
    )


def _echo_nested(members, k_values, fusion, out: Path) -> None:
    """Run the nested estimate, write nested.csv / nested.json and print its figures."""
    from serray import io
    from serray.ensemble import nested_estimate

    try:
        est = nested_estimate(members, k_values, fusion)
    except ValueError as exc:
        fail(str(exc))
    io.write_text(f"# {est.note}\n" + est.per_fold.to_csv(index=False), out / "nested.csv")
    io.write_json({"test_ua": est.test_ua, "test_wa": est.test_wa, "note": est.note,
                   "k_per_fold": est.per_fold["k"].tolist()}, out / "nested.json")
    click.echo(f"nested estimate (selection without each fold's test speakers): test UA {100 * est.test_ua:.2f} %, "
               f"WA {100 * est.test_wa:.2f} %; k per fold {est.per_fold['k'].tolist()}")
    click.echo(f"NOTE: {est.note}")
