"""Reports a researcher can paste into a paper: tables, confusion matrices, plots."""

from serray.report.tables import SystemReport, evaluate_predictions, write_report

__all__ = ["SystemReport", "evaluate_predictions", "write_report"]
