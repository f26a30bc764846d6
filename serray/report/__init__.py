"""Reports a researcher can paste into a paper: tables, significance tests, figures, HTML.

Modules: :mod:`~serray.report.tables` (metrics of one system), :mod:`~serray.report.sources`
(runs, tune-best trials and ensembles as systems), :mod:`~serray.report.comparison` and
:mod:`~serray.report.statistics` (paired tests), :mod:`~serray.report.model_records`
(generic per-fold model records), :mod:`~serray.report.figures`,
:mod:`~serray.report.tune_progress`, :mod:`~serray.report.crosscorpus`,
:mod:`~serray.report.document` (Markdown and HTML) and :mod:`~serray.report.writer`.
"""

from serray.report.tables import SystemReport, evaluate_predictions
from serray.report.writer import ReportOptions, write_report

__all__ = ["ReportOptions", "SystemReport", "evaluate_predictions", "write_report"]
