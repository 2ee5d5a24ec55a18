"""Reproduction reports: Table 1, quality lines and figures rendered from plain data.

The package knows nothing of SQL, Ray or HTTP: a caller gathers a :class:`Report` (see
``reports.model``) and calls :func:`write_report`. The models and statistics import without
matplotlib; the figures and the writer load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reports.model import (
    REWARD_LABELS,
    MetricsRow,
    Report,
    RetrainedArch,
    RewardName,
    RewardPoint,
    SearchSummary,
)
from reports.stats import QualityLine, kendall_tau, pooled_quality_line, quality_line

if TYPE_CHECKING:
    from reports.figures import architecture_png, cell_frequency_png, reward_curve_png
    from reports.render import ReportFiles, write_report

_LAZY = {
    "write_report": "reports.render",
    "ReportFiles": "reports.render",
    "reward_curve_png": "reports.figures",
    "cell_frequency_png": "reports.figures",
    "architecture_png": "reports.figures",
}

__all__ = [
    "REWARD_LABELS",
    "MetricsRow",
    "QualityLine",
    "Report",
    "ReportFiles",
    "RetrainedArch",
    "RewardName",
    "RewardPoint",
    "SearchSummary",
    "architecture_png",
    "cell_frequency_png",
    "kendall_tau",
    "pooled_quality_line",
    "quality_line",
    "reward_curve_png",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
