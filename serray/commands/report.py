"""`serray report`: tables, confusion matrices and plots from the predictions store."""

from __future__ import annotations

import click

from serray.commands._common import fail


@click.command(name="report")
@click.argument("workdir", type=click.Path(exists=True, file_okay=False))
@click.option("--runs", default=None, help="Comma-separated run names (default: every run in W/predictions).")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--by", default="gender,corpus", show_default=True, help="Manifest columns for per-group UA.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder (default W/reports/<run>).")
def command(workdir: str, runs: str | None, split: str, by: str, out: str | None) -> None:
    """Write report.md, summary.csv, table.tex (LaTeX), per-fold CSVs and confusion-matrix plots."""
    from serray.report import write_report

    try:
        path = write_report(workdir, runs.split(",") if runs else None, split=split, by=[b for b in by.split(",") if b], out=out)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    click.echo((path / "report.md").read_text())
    click.echo(f"report written to {path}")
