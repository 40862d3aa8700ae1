"""``history:``: earlier sweeps a new sweep learns from (run directories, Optuna studies, weekly retrain runs), and how much it trusts them.

Only the shape is checked here. Reading the history (files, databases) happens once, before the sweep spends
anything (:func:`rungflow.tasks.history.load_history`): validating a config must not open databases, since
every process that receives the config validates it again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rungflow.config.credentials import OptionalSecretURL
from rungflow.config.errors import _Strict


class HistoryConfig(_Strict):
    runs: list[str] = Field(default_factory=list, description="run directories of earlier sweeps, or globs of them "
                                                             "(runs/digits-*); their config.json, ledger.jsonl and result.json are read")
    optuna_url: OptionalSecretURL = Field(default=None, description="an Optuna RDB storage holding earlier sweeps' studies; "
                                                            "{secret: NAME} reads it from a Prefect Secret block")
    studies: list[str] | Literal["all"] | None = Field(default=None, description="study names in optuna_url, or all: "
                                                                                 "every study there over the same space")
    configs: list[dict[str, Any]] = Field(default_factory=list, description="configurations given as data, a portfolio "
                                                                           "learned elsewhere (automl's, learned across "
                                                                           "tables); tried first, before the sources' own")
    configs_source: str | None = Field(default=None, description="where configs came from, shown in the summary")
    portfolio: int = Field(default=4, description="configurations from the history proposed first; 0: none")
    registry: str | None = Field(default=None, description="a model registry the weekly retrain writes (a directory, "
                                                           "or s3://bucket/prefix); read with retrain_runs")
    retrain_runs: list[str] = Field(default_factory=list, description="weekly retrain runs in registry, as NAME/RUN_ID "
                                                                      "or NAME/latest: each run's Optuna studies, else "
                                                                      "the registry's JSON copy of the same results")
    model: Literal["auto", "off", "all"] = Field(default="auto", description="auto: earlier results of the same task "
                                                                              "(same trainable and options) also fit "
                                                                              "BOHB's/TPE's model; all: every source's "
                                                                              "results do, as this task's own (this "
                                                                              "task on other data, as last week's "
                                                                              "table); off: the portfolio only")
    model_prior: Literal["auto", "off"] = Field(default="auto", description="auto: a model of the earlier sweeps' "
                                                                             "results, ranked within each sweep, "
                                                                             "proposes part of the new trials, its "
                                                                             "share following how its trials rank on "
                                                                             "this sweep's own results; off: none")

    @field_validator("runs", "retrain_runs", mode="before")
    @classmethod
    def _one_entry(cls, value: Any) -> Any:
        # One entry may be written bare, as YAML users do: `runs: runs/last-week`.
        return [value] if isinstance(value, str) else value

    @field_validator("runs")
    @classmethod
    def _no_empty(cls, runs: list[str]) -> list[str]:
        if any(not r.strip() for r in runs):
            raise ValueError("an empty entry; give a run directory (runs/digits-2024-w01) or a glob (runs/digits-*)")
        return runs

    @field_validator("retrain_runs")
    @classmethod
    def _name_and_run(cls, runs: list[str]) -> list[str]:
        for run in runs:
            name, _, run_id = run.partition("/")
            if not name or not run_id or "/" in run_id:
                raise ValueError(f"{run!r} is not NAME/RUN_ID; write the model's name and the run, as the registry "
                                 "lists them under models/NAME/runs/ (churn-weekly/20240603T050000Z-1a2b3c), or "
                                 "NAME/latest")
        return runs

    @field_validator("studies", mode="before")
    @classmethod
    def _one_study(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) and value != "all" else value

    @field_validator("portfolio")
    @classmethod
    def _portfolio(cls, n: int) -> int:
        if not 0 <= n <= 64:
            raise ValueError("must be between 0 and 64: the portfolio is a few configurations tried beside the "
                             "searcher's first draws; 0 turns it off")
        return n

    @model_validator(mode="after")
    def _sources(self) -> HistoryConfig:
        if self.optuna_url is not None and not self.studies:
            raise ValueError("studies is needed with optuna_url; name the studies (studies: [digits-w01]) "
                             "or write studies: all")
        if self.studies and self.optuna_url is None:
            raise ValueError("optuna_url is needed with studies; give the storage they are in "
                             "(sqlite:///runs/x/optuna.db, postgresql+psycopg://user@host/db, or {secret: NAME})")
        if self.retrain_runs and self.registry is None:
            raise ValueError("registry is needed with retrain_runs; give the registry the retrain writes "
                             "(./registry, or s3://bucket/prefix)")
        if self.registry is not None and not self.retrain_runs:
            raise ValueError("retrain_runs is needed with registry; name the runs (retrain_runs: [churn-weekly/latest]), "
                             "or remove registry")
        if not self.runs and not self.studies and not self.retrain_runs and not self.configs:
            raise ValueError("no source; give runs (run directories or globs), optuna_url with studies, "
                             "registry with retrain_runs, and/or configs, or remove the section")
        return self
