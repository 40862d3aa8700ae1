"""``history:``: earlier sweeps a new sweep learns from (run directories, Optuna studies), and how much it trusts them.

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
    portfolio: int = Field(default=4, description="configurations from the history proposed first; 0: none")
    model: Literal["auto", "off"] = Field(default="auto", description="auto: earlier results of the same task (same "
                                                                       "trainable and options) also fit BOHB's/TPE's "
                                                                       "model; off: the portfolio only")

    @field_validator("runs", mode="before")
    @classmethod
    def _one_run(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("runs")
    @classmethod
    def _no_empty(cls, runs: list[str]) -> list[str]:
        if any(not r.strip() for r in runs):
            raise ValueError("an empty entry; give a run directory (runs/digits-2024-w01) or a glob (runs/digits-*)")
        return runs

    @field_validator("studies", mode="before")
    @classmethod
    def _one_study(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) and value != "all" else value

    @field_validator("portfolio")
    @classmethod
    def _portfolio(cls, n: int) -> int:
        if not 0 <= n <= 64:
            raise ValueError("must be between 0 and 64: the portfolio is a few configurations tried first, after "
                             "which the search is cold; 0 turns it off")
        return n

    @model_validator(mode="after")
    def _sources(self) -> HistoryConfig:
        if self.optuna_url is not None and not self.studies:
            raise ValueError("studies is needed with optuna_url; name the studies (studies: [digits-w01]) "
                             "or write studies: all")
        if self.studies and self.optuna_url is None:
            raise ValueError("optuna_url is needed with studies; give the storage they are in "
                             "(sqlite:///runs/x/optuna.db, postgresql+psycopg://user@host/db, or {secret: NAME})")
        if not self.runs and not self.studies:
            raise ValueError("no source; give runs (run directories or globs) and/or optuna_url with studies, "
                             "or remove the section")
        return self
