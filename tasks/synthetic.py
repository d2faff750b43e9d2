"""Synthetic churn customers with the IBM Telco columns and a known churn mechanism.

The embedded demo, the tests and the benchmarks need data that is free to share, as
large as asked, and whose truth is known. Rows are generated in fixed blocks, each from
its own seeded generator, so a given seed yields the same customers whatever the size
asked for or the chunking used to write them.

The churn mechanism (log-odds, before noise), chosen so that a network can beat a
linear model:

- month-to-month contracts churn more, two-year contracts much less;
- churn falls with the log of tenure, but long-tenure month-to-month customers churn
  again (a U shape only visible within that contract);
- fiber customers with a monthly bill over 85 churn more (an interaction of a category
  and a threshold), and more still without tech support or online security;
- senior citizens paying by electronic check churn more (neither alone does much);
- internet customers who stream exactly one of TV or movies churn more (an
  exclusive or).

With ``drift`` on, the second half of the time window moves, more as time goes on:
more fiber, higher bills, a stronger month-to-month effect, the senior/electronic
check driver fading and a new one (DSL without online backup) appearing, so models
trained on older windows rank the newest customers worse.
Labels are known at ``event_date`` plus a delay (see :func:`label_arrival_dates`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BLOCK_ROWS = 50_000
MIN_ROWS = 1
MAX_ROWS = 10_000_000
DEFAULT_START = dt.date(2024, 1, 1)
DEFAULT_SPAN_DAYS = 730

CONTRACTS = ("Month-to-month", "One year", "Two year")
INTERNET = ("DSL", "Fiber optic", "No")
PAYMENTS = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)
ADD_ONS = (
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
)
COLUMNS = (
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    *ADD_ONS,
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    "Churn",
    "signup_date",
    "event_date",
)
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


ID_SPACE = 10_000 * 26**5


def _customer_ids(start: int, count: int, seed: int) -> np.ndarray:
    # Telco-shaped ids ("7590-VHVEG"), unique within a seed up to 118 million rows.
    # Each seed starts at its own place in the id space, so customers drawn with
    # another seed (a week of live traffic) are not the training customers again.
    offset = (seed * 2_654_435_761) % ID_SPACE
    index = (np.arange(start, start + count) + offset) % ID_SPACE
    digits = np.char.zfill((index % 10_000).astype(str), 4)
    rest = index // 10_000
    letters = []
    for _ in range(5):
        letters.append(_LETTERS[rest % 26])
        rest = rest // 26
    suffix = letters[4]
    for column in reversed(letters[:4]):
        suffix = np.char.add(suffix, column)
    return np.char.add(np.char.add(digits, "-"), suffix)


def _yes_no(flags: np.ndarray) -> np.ndarray:
    return np.where(flags, "Yes", "No")


def _block(
    block: int, wanted: int, seed: int, drift: bool, start: dt.date, span_days: int
) -> pd.DataFrame:
    # A block is always drawn whole and then cut, so the first rows of a seed never
    # depend on how many rows were asked for.
    rng = np.random.default_rng([seed, block])
    rows = BLOCK_ROWS
    first = block * BLOCK_ROWS

    day = rng.integers(0, span_days, rows)
    time_share = day / max(span_days - 1, 1)
    drifted = drift & (time_share >= 0.5)
    drift_strength = np.where(drifted, (time_share - 0.5) * 2, 0.0)

    contract = rng.choice(3, rows, p=[0.55, 0.21, 0.24])
    mtm = contract == 0
    two_year = contract == 2
    tenure_scale = np.choose(contract, [14.0, 32.0, 50.0])
    tenure = np.minimum(rng.exponential(tenure_scale), 72).astype(int)
    fiber_p = np.where(drifted, 0.58, 0.44)
    internet = np.where(
        rng.random(rows) < fiber_p, 1, rng.choice([0, 2], rows, p=[0.6, 0.4])
    )
    has_internet = internet != 2
    fiber = internet == 1
    phone = rng.random(rows) < 0.9
    multiple = phone & (rng.random(rows) < 0.45)
    add_on_flags = {
        name: has_internet & (rng.random(rows) < p)
        for name, p in zip(ADD_ONS, (0.3, 0.35, 0.35, 0.3, 0.4, 0.4), strict=True)
    }
    payment = rng.choice(4, rows, p=[0.34, 0.23, 0.22, 0.21])
    senior = rng.random(rows) < 0.16
    partner = rng.random(rows) < 0.48
    dependents = rng.random(rows) < np.where(partner, 0.5, 0.1)
    paperless = rng.random(rows) < 0.59

    monthly = (
        np.choose(internet, [45.0, 70.0, 20.0])
        + 5.0 * sum(flags.astype(float) for flags in add_on_flags.values())
        + 10.0 * phone
        + 8.0 * multiple
        + 10.0 * drifted
        + rng.normal(0, 4, rows)
    )
    monthly = np.round(np.clip(monthly, 18.25, 118.75), 2)
    total = np.round(monthly * tenure * rng.normal(1.0, 0.03, rows), 2)
    total = np.where(tenure == 0, np.nan, np.maximum(total, monthly))

    streams_one = add_on_flags["StreamingTV"] ^ add_on_flags["StreamingMovies"]
    unprotected = ~add_on_flags["TechSupport"] & ~add_on_flags["OnlineSecurity"]
    logit = (
        -2.2
        + (1.3 + 1.2 * drift_strength) * mtm
        - 1.0 * two_year
        - 0.9 * np.log1p(tenure) / math.log(73) * 3
        + 2.2 * (mtm & (tenure > 40))
        + 1.9 * (fiber & (monthly > 85))
        - 0.6 * fiber
        + 0.7 * (fiber & unprotected)
        + (2.0 - 2.0 * drift_strength) * (senior & (payment == 0))
        + 1.6 * (has_internet & streams_one)
        + 0.3 * paperless
        # Under drift a new driver appears: DSL customers without online backup.
        + 2.5 * drift_strength * ((internet == 0) & ~add_on_flags["OnlineBackup"])
        - 1.2 * drift_strength * two_year
    )
    churn = rng.random(rows) < 1 / (1 + np.exp(-(logit + rng.normal(0, 0.3, rows))))

    event = np.datetime64(start) + day.astype("timedelta64[D]")
    signup = event - (tenure * 30.4375).astype(int).astype("timedelta64[D]")
    frame = pd.DataFrame(
        {
            "customerID": _customer_ids(first, rows, seed),
            "gender": np.where(rng.random(rows) < 0.5, "Female", "Male"),
            "SeniorCitizen": senior.astype("int64"),
            "Partner": _yes_no(partner),
            "Dependents": _yes_no(dependents),
            "tenure": tenure.astype("int64"),
            "PhoneService": _yes_no(phone),
            "MultipleLines": np.where(phone, _yes_no(multiple), "No phone service"),
            "InternetService": np.array(INTERNET)[internet],
            **{
                name: np.where(has_internet, _yes_no(flags), "No internet service")
                for name, flags in add_on_flags.items()
            },
            "Contract": np.array(CONTRACTS)[contract],
            "PaperlessBilling": _yes_no(paperless),
            "PaymentMethod": np.array(PAYMENTS)[payment],
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "Churn": _yes_no(churn),
            "signup_date": signup.astype("datetime64[ns]"),
            "event_date": event.astype("datetime64[ns]"),
        }
    )
    frame = frame.iloc[:wanted].copy()
    for name in COLUMNS:
        if frame[name].dtype == object:
            frame[name] = frame[name].astype("string")
    return frame


def _check_size(n_rows: int) -> None:
    if not MIN_ROWS <= n_rows <= MAX_ROWS:
        raise ValueError(
            f"synthetic customers: n_rows must be between {MIN_ROWS:,} and "
            f"{MAX_ROWS:,}, got {n_rows:,}"
        )


def _blocks(
    n_rows: int,
    seed: int,
    drift: bool,
    start: dt.date,
    span_days: int,
) -> list[tuple[int, int]]:
    _check_size(n_rows)
    count = math.ceil(n_rows / BLOCK_ROWS)
    return [
        (block, min(BLOCK_ROWS, n_rows - block * BLOCK_ROWS)) for block in range(count)
    ]


def generate_customers(
    n_rows: int,
    seed: int,
    *,
    drift: bool = False,
    start: dt.date = DEFAULT_START,
    span_days: int = DEFAULT_SPAN_DAYS,
) -> pd.DataFrame:
    """Customers in memory; for millions of rows use :func:`write_customers_parquet`."""
    parts = [
        _block(block, rows, seed, drift, start, span_days)
        for block, rows in _blocks(n_rows, seed, drift, start, span_days)
    ]
    return pd.concat(parts, ignore_index=True)


def write_customers_parquet(
    path: str | Path,
    n_rows: int,
    seed: int,
    *,
    drift: bool = False,
    start: dt.date = DEFAULT_START,
    span_days: int = DEFAULT_SPAN_DAYS,
) -> Path:
    """Write customers to Parquet one block at a time, never all rows in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    started = time.monotonic()
    blocks = _blocks(n_rows, seed, drift, start, span_days)
    writer: pq.ParquetWriter | None = None
    try:
        for done, (block, rows) in enumerate(blocks, start=1):
            table = pa.Table.from_pandas(
                _block(block, rows, seed, drift, start, span_days), preserve_index=False
            )
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            if done % 20 == 0:
                log.info(
                    "Synthetic customers: %d of %d blocks written", done, len(blocks)
                )
    except BaseException:
        # Nothing half-written stays behind: the target appears whole or not at all.
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    partial.replace(target)
    log.info(
        "Wrote %d synthetic customers (seed %d, drift %s) to %s in %.1f s",
        n_rows,
        seed,
        drift,
        target,
        time.monotonic() - started,
    )
    return target


def label_arrival_dates(frame: pd.DataFrame, delay_days: int) -> pd.Series:
    """When each customer's churn label becomes known: the event date plus a delay."""
    return frame["event_date"] + pd.Timedelta(days=delay_days)
