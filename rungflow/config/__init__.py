"""The sweep config: YAML validated up front, every error naming the field, the value and the fix.

One module per concept: the sections (``search``, ``budget``, ``runtime``, ``storage``, ``history``), the whole config
(``sweep``), reading it (``loading``), what a resume may change (``resume``) and the error line (``errors``).
Every name is re-exported here, so ``from rungflow.config import X`` is the one import callers need.
"""

from __future__ import annotations

from rungflow.config.budget import BUDGET_FROM_SCHEDULER, BUDGET_RENAMED, BudgetConfig, parse_duration
from rungflow.config.ensemble import EnsembleConfig
from rungflow.config.errors import ConfigError
from rungflow.config.errors import _one_line as _one_line  # flows/retrain.py words its own errors the same way
from rungflow.config.history import HistoryConfig
from rungflow.config.loading import apply_overrides, load_config, validate
from rungflow.config.resume import RESUMABLE, resume_conflicts
from rungflow.config.runtime import RuntimeConfig, UiConfig
from rungflow.config.search import MetricConfig, SchedulerConfig, SearchConfig, TrainableConfig
from rungflow.config.storage import SLUG_MAX, MLflowConfig, S3Config, StorageConfig, TrackingConfig, slug
from rungflow.config.sweep import SweepConfig

__all__ = ["SweepConfig", "ConfigError", "load_config", "apply_overrides", "parse_duration", "RESUMABLE", "resume_conflicts",
           "validate", "slug", "SLUG_MAX", "BUDGET_RENAMED", "BUDGET_FROM_SCHEDULER", "BudgetConfig", "TrainableConfig",
           "MetricConfig", "SearchConfig", "SchedulerConfig", "RuntimeConfig", "UiConfig", "S3Config", "StorageConfig",
           "MLflowConfig", "TrackingConfig", "HistoryConfig", "EnsembleConfig"]
