"""`serray report`: tables, significance tests, figures and one HTML page from the predictions store."""

from __future__ import annotations

import click

from serray.commands._common import fail, split_names


@click.command(name="report")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--runs", default=None, metavar="NAME[,NAME...]",
              help="Systems to report, comma-separated: RUN (a train or seeds run; a Tune experiment gives its best "
                   "trial), RUN/CONFIG_ID, or ensemble:NAME[:k=K] (W/ensemble/NAME). Default: every run in W/predictions.")
@click.option("--compare", is_flag=True, help="Compare the runs (two or more required); implied by two or more --runs.")
@click.option("--tune", "tune_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Tune experiment folder (W/tune/EXPERIMENT) whose search progress to show (repeatable).")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--by", default="gender,corpus", show_default=True, help="Manifest columns for per-group UA.")
@click.option("--pair-by", type=click.Choice(["speaker", "fold"]), default="speaker", show_default=True,
              help="Units of the paired tests.")
@click.option("--marks", "test", type=click.Choice(["wilcoxon", "ttest"]), default="wilcoxon", show_default=True,
              help="Test behind the significance marks in the summary table.")
@click.option("--correction", type=click.Choice(["holm", "bh", "none"]), default="holm", show_default=True,
              help="Multiple-comparison correction of the all-pairs p-values and marks: Holm-Bonferroni, Benjamini-Hochberg or none.")
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, type=click.IntRange(1),
              help="Bootstrap resamples of the UA difference.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (default W/reports/<run> or W/reports/comparison).")
def command(workdir: str, runs: str | None, compare: bool, tune_dirs: tuple[str, ...], split: str, by: str, pair_by: str,
            test: str, correction: str, n_boot: int, seed: int, out: str | None) -> None:
    """Write report.md, report.html (self-contained), summary.csv, table.tex, paired tests and figures.

    \b
    Examples:
      serray report W --runs svm-run,mlp-base --compare
      serray report W --runs mlp-base,ensemble:mlp-val
      serray report W --tune W/tune/tune-mlp-egemaps-loso-native
    """
    from serray.report import ReportOptions, write_report

    names = split_names(runs, "--runs") if runs is not None else None
    try:
        opts = ReportOptions(split=split, by=tuple(b for b in by.split(",") if b), pair_by=pair_by, test=test,
                             n_boot=n_boot, seed=seed, compare=compare, correction=correction)
        path = write_report(workdir, names, out=out, tune=tune_dirs, options=opts)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    click.echo((path / "report.md").read_text())
    click.echo(f"report written to {path} (report.md, report.html)")
