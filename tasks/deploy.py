"""The release path: staging, canary, promotion or automatic rollback, the drill.

Every step talks to the real prediction service over HTTP: the one at
``serving.url`` when it is set, otherwise one started here on a free loopback port
over the same storage. Aliases move only through :func:`tasks.registry.move_alias`,
so two runs promoting at once cannot both win, and every production move lands in
the score store's deployment history.

I6 (canary) and I7 (rollback) are recorded here. A failed canary removes the canary
alias (production never changed) and raises :class:`GateFailed`; a failed drill rolls
forward again and raises too, so the release shows as failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import numpy as np
import pandas as pd

from gates.result import GateFailed, GateResult, Verdict, insufficient
from gates.store import ScoreStore
from serving.router import ModelLoader, ModelRouter, load_served_model
from serving.settings import ServingSettings, load_serving_settings
from tasks.config import DatasetConfig
from tasks.context import RunContext
from tasks.ingest import read_frame
from tasks.registry import (
    AliasConflict,
    RegistryError,
    alias_history,
    clear_alias,
    list_versions,
    move_alias,
    resolve_alias,
)
from tasks.storage import ArtifactStore
from tasks.traffic import TrafficReport, customer_records, send_traffic

log = logging.getLogger(__name__)

PRODUCTION, STAGING, CANARY = "production", "staging", "canary"
# Reasons of production moves made by rollback_production start with the action in
# brackets; a version left by a rollback is not the default target of the next one.
ROLLBACK_ACTIONS = ("rollback", "drill_rollback")
STAGING_SOURCE, CANARY_SOURCE, PROBE_SOURCE = "staging", "canary-release", "probe"
MIN_REASON_CHARS = 10


class DeploymentError(RuntimeError):
    """A release or rollback step cannot go on; the message says what to do."""

    retryable = True


class RollbackRefused(DeploymentError):
    """A rollback asked for something unsafe or impossible; nothing was moved."""

    retryable = False


class PromotionConflict(DeploymentError):
    """Production moved since the canary compared against it; nothing was moved."""

    retryable = False


# Settings and small helpers -------------------------------------------------------


def _setting(ctx: RunContext, name: str) -> Any:
    return ctx.gate_setting("deployment", name)


def _version_of(result: Mapping[str, Any]) -> str:
    version = result.get("model_version") or result.get("version")
    if not version:
        raise DeploymentError(
            f"the upstream step returned no model version (keys: {sorted(result)}); "
            "expected 'model_version' from register_model_step"
        )
    return str(version)


def _pseudonym_like(text: str) -> str:
    # Ids for made-up customers: shaped like pseudonyms, derived from no customer.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def probe_customer(dataset: DatasetConfig, name: str = "probe") -> dict[str, Any]:
    """A made-up customer with every input missing: any version can answer it."""
    contract = dataset.contract
    row: dict[str, Any] = {
        column: None
        for column in contract.columns
        if column not in (contract.label.column, *contract.direct_identifiers)
    }
    row[contract.id_column] = _pseudonym_like(f"churnops-{name}")
    return row


# The service the steps talk to -----------------------------------------------------


@contextlib.contextmanager
def open_service(
    store: ArtifactStore,
    dataset: DatasetConfig,
    serving: ServingSettings,
    *,
    router: ModelRouter | None = None,
    prediction_log: Any = True,
    load_model: ModelLoader | None = None,
) -> Iterator[str]:
    """The base URL of a service over ``store``: the configured one, or one started
    here on loopback (and stopped on exit)."""
    if serving.url and router is None:
        reload_service(serving.url)
        yield serving.url.rstrip("/")
        return
    from serving.app import build_service, create_app
    from serving.runner import serve_in_thread

    router = router or ModelRouter(
        store, serving.canary_share, load=load_model or load_served_model
    )
    service = build_service(
        store, serving, dataset, router=router, prediction_log=prediction_log
    )
    with serve_in_thread(create_app(service), host=serving.host) as running:
        yield running.url


def reload_service(url: str, timeout_seconds: float = 60.0) -> dict[str, Any]:
    """Ask the service to re-read its aliases now; returns its health."""
    try:
        response = httpx.post(f"{url.rstrip('/')}/reload", timeout=timeout_seconds)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DeploymentError(
            f"the prediction service at {url} did not reload ({exc}); check that it "
            "runs (python -m serving) or clear serving.url to use a local one"
        ) from exc
    health: dict[str, Any] = response.json()
    return health


def verify_serving(
    url: str,
    version: str,
    probe: dict[str, Any],
    *,
    alias: str = PRODUCTION,
    timeout_seconds: float,
) -> float:
    """Wait until ``alias`` answers a request with ``version``; returns the seconds.

    Raises :class:`DeploymentError` naming what the service serves instead.
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    seen: Any = None
    while True:
        health = reload_service(url)
        seen = health.get("versions", {}).get(alias)
        if seen == version:
            try:
                response = httpx.post(
                    f"{url.rstrip('/')}/predict",
                    json={"customers": [probe]},
                    headers={"X-Churnops-Source": PROBE_SOURCE},
                    timeout=max(deadline - time.monotonic(), 1.0),
                )
            except httpx.HTTPError as exc:
                # A probe lost on the way counts as "not serving yet": keep trying
                # until the deadline rather than abandon a half-done move.
                seen = f"{version} loaded, but a probe failed ({exc})"
            else:
                if response.status_code == 200:
                    served = response.json()["predictions"][0]["model_version"]
                    if served == version:
                        return time.monotonic() - started
                    seen = f"{served} (answered a probe)"
                else:
                    seen = (
                        f"{version} loaded, but a probe got HTTP {response.status_code}"
                    )
        if time.monotonic() > deadline:
            aliases = health.get("aliases", {}).get(alias, {})
            raise DeploymentError(
                f"after {timeout_seconds:.0f} s the service at {url} serves {seen} "
                f"for {alias!r}, not {version}; its last load error: "
                f"{aliases.get('error', 'none')}"
            )
        time.sleep(0.2)


# Staging ---------------------------------------------------------------------------


def _staging_rows(
    ctx: RunContext, features: Mapping[str, Any] | None, transform: Any
) -> tuple[pd.DataFrame, list[tuple[str, int, int]]]:
    """Holdout customers plus known-answer customers, and the known-answer pairs."""
    dataset = ctx.dataset
    id_column = dataset.contract.id_column
    n_rows = int(_setting(ctx, "staging_sample_rows"))
    parts: list[pd.DataFrame] = []
    if features and features.get("holdout"):
        holdout = read_frame(ctx.store, features["holdout"]).head(n_rows)
        parts.append(holdout.drop(columns=[dataset.contract.label.column]))
    pairs: list[tuple[str, int, int]] = []
    known = ctx.settings.gate_settings("model").get("known_answers") or []
    if known and features and features.get("train"):
        from tasks.model_steps import known_answer_rows

        reference = read_frame(ctx.store, features["train"])
        for name, higher, lower in known_answer_rows(list(known), reference):
            start = sum(len(p) for p in parts)
            for side, row in (("higher", higher), ("lower", lower)):
                row = row.drop(columns=[dataset.contract.label.column], errors="ignore")
                row[id_column] = _pseudonym_like(f"known-answer-{name}-{side}")
                parts.append(row)
            pairs.append((str(name), start, start + 1))
    # Every input missing or unseen: the fill and "other" paths must match offline.
    parts.append(pd.DataFrame([probe_customer(dataset, "missing-inputs")]))
    unseen = probe_customer(dataset, "unseen-categories")
    for name, kind in transform.kinds.items():
        unseen[name] = "never-seen-value" if kind == "categorical" else 1e6
    parts.append(pd.DataFrame([unseen]))
    frame = pd.concat(parts, ignore_index=True)
    return frame, pairs


def stage_model_step(
    ctx: RunContext,
    registered: Mapping[str, Any],
    features: Mapping[str, Any] | None = None,
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """Load the candidate in the serving code and check it answers like offline.

    The service runs here on loopback serving only this version; holdout customers
    and known-answer customers go over HTTP one by one, then once as a batch. The
    served probabilities must equal the version's offline ones, with no error and
    p95 latency within budget; then ``staging`` points at the version. A failure is
    recorded as I6 and raises GateFailed.
    """
    from tasks.registry import load_model_version

    version = _version_of(registered)
    serving = load_serving_settings()
    offline_model = load_model_version(ctx.store, version)
    frame, pairs = _staging_rows(ctx, features, offline_model.transform)
    try:
        offline = offline_model.predict(frame)
    except Exception as exc:  # a broken version must fail the gate, not the task
        log.info("Offline predictions of %s failed: %s", version, exc)
        offline = np.full(len(frame), np.nan)
    records = customer_records(frame)
    id_column = ctx.dataset.contract.id_column

    router = ModelRouter(
        ctx.store,
        0.0,
        primary_alias=STAGING,
        canary_alias=None,
        resolve=lambda _store, _alias: version,
        load=load_model or load_served_model,
    )
    with open_service(
        ctx.store, ctx.dataset, serving, router=router, prediction_log=False
    ) as url:
        report = send_traffic(url, records, id_column=id_column, source=STAGING_SOURCE)
        batch = httpx.post(
            f"{url}/predict",
            json={"customers": records},
            headers={"X-Churnops-Source": STAGING_SOURCE},
            timeout=60.0,
        )

    result = check_staging(
        version,
        report,
        batch.json() if batch.status_code == 200 else None,
        offline,
        pairs,
        max_prediction_diff=float(_setting(ctx, "max_prediction_diff")),
        max_p95_latency_ms=float(_setting(ctx, "max_p95_latency_ms")),
    )
    evidence = ctx.store.write_json(ctx.key("deploy", "staging.json"), result.details)
    if result.verdict is Verdict.FAIL:
        ctx.record(
            GateResult(
                "I6",
                result.verdict,
                result.reason,
                value=result.value,
                threshold=result.threshold,
                evidence=evidence,
                details=result.details,
            )
        )
        raise GateFailed(result)

    move_alias(
        ctx.store,
        STAGING,
        version,
        actor=ctx.dag_id,
        reason=f"staged by run {ctx.run_id}: {result.reason}",
        clock=ctx.clock,
    )
    log.info("Staged %s: %s", version, result.reason)
    return {
        "model_version": version,
        "verdict": result.verdict.value,
        "reason": result.reason,
        "evidence": evidence,
        **{k: result.details[k] for k in ("requests", "max_diff", "p95_ms")},
    }


def check_staging(
    version: str,
    report: TrafficReport,
    batch: Mapping[str, Any] | None,
    offline: np.ndarray,
    pairs: list[tuple[str, int, int]],
    *,
    max_prediction_diff: float,
    max_p95_latency_ms: float,
) -> GateResult:
    """The staging half of I6: no errors, latency in budget, answers as offline.

    Known-answer customers are held to the offline answers of the same version; their
    ordering is a quality question I4 already asked.
    """
    traffic = report.for_alias(STAGING)
    failures: list[str] = []
    errors = [e for e in report.exchanges if e.failed]
    if errors:
        failures.append(
            f"{len(errors)} of {len(report.exchanges)} requests failed "
            f"(first: HTTP {errors[0].status} {errors[0].error})"
        )
    served = np.array(
        [np.nan if e.probability is None else e.probability for e in report.exchanges]
    )
    gaps = np.abs(served - offline)
    diff = float(np.max(gaps)) if gaps.size and not np.isnan(gaps).all() else np.inf
    if np.isnan(offline).any():
        failures.append("the version's offline predictions failed on these customers")
    elif not np.isfinite(diff) or diff > max_prediction_diff:
        failures.append(
            f"served predictions differ from offline by up to {diff:.3g} "
            f"(allowed {max_prediction_diff})"
        )
    if batch is None:
        failures.append("a batch request of every customer failed")
    else:
        batch_p = np.array([p["churn_probability"] for p in batch["predictions"]])
        batch_diff = float(np.max(np.abs(batch_p - offline)))
        if batch_diff > max_prediction_diff:
            failures.append(
                f"batch predictions differ from offline by up to {batch_diff:.3g}"
            )
    p95 = traffic.latency_ms(95) if traffic else None
    if p95 is None or p95 > max_p95_latency_ms:
        failures.append(f"p95 latency {p95} ms over the {max_p95_latency_ms} ms budget")
    details = {
        "phase": "staging",
        "model_version": version,
        "requests": len(report.exchanges),
        "errors": len(errors),
        "max_diff": diff if np.isfinite(diff) else None,
        "p95_ms": p95,
        "known_answers": [name for name, _, _ in pairs],
        "failures": failures,
        "traffic": report.summary(),
    }
    if failures:
        return GateResult(
            "I6",
            Verdict.FAIL,
            f"staging rejected {version}: " + "; ".join(failures),
            value=p95,
            threshold=max_p95_latency_ms,
            details=details,
        )
    return GateResult(
        "I6",
        Verdict.PASS,
        f"{version} served {len(report.exchanges)} staging requests with no error, "
        f"p95 {p95:.1f} ms (budget {max_p95_latency_ms}), matching offline within "
        f"{diff:.2g}",
        value=p95,
        threshold=max_p95_latency_ms,
        details=details,
    )


# Canary ----------------------------------------------------------------------------


def ks_distance(first: np.ndarray, second: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between ECDFs."""
    a, b = np.sort(first), np.sort(second)
    points = np.concatenate([a, b])
    gap = (
        np.searchsorted(a, points, side="right") / a.size
        - np.searchsorted(b, points, side="right") / b.size
    )
    return float(np.max(np.abs(gap)))


def check_canary(
    report: TrafficReport,
    candidate: str,
    production_version: str | None,
    *,
    min_canary_requests: int,
    max_error_rate: float,
    max_p95_latency_ms: float,
    max_p95_latency_ratio: float,
    latency_slack_ms: float,
    max_prediction_ks: float,
) -> GateResult:
    """I6: the canary's errors, latency and predictions against production's."""
    canary = report.for_alias(CANARY)
    production = report.for_alias(PRODUCTION)
    failures: list[tuple[str, float | None, float]] = []
    notes: list[str] = []

    requests = canary.requests if canary else 0
    if requests < min_canary_requests:
        failures.append(
            (
                f"only {requests} requests reached the canary (need "
                f"{min_canary_requests}; did the service load {candidate}?)",
                float(requests),
                float(min_canary_requests),
            )
        )
    if canary is not None and canary.versions not in ((), (candidate,)):
        failures.append((f"the canary answered as {list(canary.versions)}", None, 0.0))
    error_rate = canary.error_rate if canary else 0.0
    notes.append(f"error rate {error_rate:.3f} (max {max_error_rate})")
    if error_rate > max_error_rate:
        failures.append(
            (
                f"canary error rate {error_rate:.3f} over {max_error_rate}",
                error_rate,
                max_error_rate,
            )
        )

    p95 = canary.latency_ms(95) if canary else None
    limit = max_p95_latency_ms
    production_p95 = production.latency_ms(95) if production else None
    if production_p95 is not None:
        limit = min(limit, production_p95 * max_p95_latency_ratio + latency_slack_ms)
    notes.append(
        f"p95 {p95 if p95 is None else round(p95, 1)} ms (limit {limit:.1f} ms)"
    )
    if p95 is not None and p95 > limit:
        failures.append((f"canary p95 {p95:.1f} ms over {limit:.1f} ms", p95, limit))

    ks: float | None = None
    if production_version is None:
        notes.append(
            "first release: no production model to compare with, so errors and "
            "latency were held to the absolute thresholds only"
        )
    elif production is None or production.probabilities.size == 0:
        failures.append(
            (
                f"no successful production requests to compare {candidate} with",
                None,
                0.0,
            )
        )
    elif canary is not None and canary.probabilities.size:
        ks = ks_distance(canary.probabilities, production.probabilities)
        notes.append(f"prediction KS {ks:.3f} vs production (max {max_prediction_ks})")
        if ks > max_prediction_ks:
            failures.append(
                (
                    f"canary predictions drift from production: KS {ks:.3f} over "
                    f"{max_prediction_ks}",
                    ks,
                    max_prediction_ks,
                )
            )

    details = {
        "phase": "canary",
        "model_version": candidate,
        "production_version": production_version,
        "ks": ks,
        "failures": [text for text, _, _ in failures],
        "traffic": report.summary(),
    }
    if failures:
        _, value, threshold = failures[0]
        return GateResult(
            "I6",
            Verdict.FAIL,
            f"canary {candidate} rolled back: " + "; ".join(t for t, _, _ in failures),
            value=value,
            threshold=threshold,
            details=details,
        )
    against = production_version or "no production model"
    return GateResult(
        "I6",
        Verdict.PASS,
        f"canary {candidate} took {requests} of {len(report.exchanges)} requests "
        f"against {against}: " + "; ".join(notes),
        value=p95,
        threshold=limit,
        details=details,
    )


def _traffic_records(
    ctx: RunContext,
    features: Mapping[str, Any] | None,
    key: bytes | None,
    allow_generated_key: bool,
) -> list[dict[str, Any]]:
    """Fresh synthetic customers under the pipeline's key, else the holdout rows."""
    from tasks.pseudonymize import resolve_pseudonymization_key
    from tasks.traffic import TrafficError, simulate_customers

    n_rows = int(_setting(ctx, "canary_requests"))
    seed = int(_setting(ctx, "canary_traffic_seed"))
    try:
        secret = resolve_pseudonymization_key(
            key=key, allow_generated_key=allow_generated_key
        )
        return customer_records(simulate_customers(ctx.dataset, n_rows, seed, secret))
    except TrafficError as exc:
        if not features or not features.get("holdout"):
            raise DeploymentError(
                f"no canary traffic: {exc}, and no holdout rows were passed in"
            ) from exc
        log.info("Canary traffic replays holdout rows: %s", exc)
    holdout = read_frame(ctx.store, features["holdout"])
    rows = holdout.drop(columns=[ctx.dataset.contract.label.column]).head(n_rows)
    return customer_records(rows)


def canary_model_step(
    ctx: RunContext,
    registered: Mapping[str, Any],
    staged: Mapping[str, Any],
    features: Mapping[str, Any] | None = None,
    key: bytes | None = None,
    allow_generated_key: bool = False,
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """I6: a slice of simulated live traffic on the canary, compared with production.

    On failure the canary alias is removed (production never moved), the result is
    recorded and GateFailed raised.
    """
    version = _version_of(registered)
    if staged.get("verdict") != Verdict.PASS.value or _version_of(staged) != version:
        raise DeploymentError(
            f"{version} was not staged successfully (staging said {dict(staged)}); "
            "run stage_model_step first"
        )
    serving = load_serving_settings()
    records = _traffic_records(ctx, features, key, allow_generated_key)
    production = resolve_alias(ctx.store, PRODUCTION)
    actor = ctx.dag_id

    move_alias(
        ctx.store,
        CANARY,
        version,
        actor=actor,
        reason=f"canary of run {ctx.run_id} against {production}",
        clock=ctx.clock,
    )
    try:
        with open_service(
            ctx.store, ctx.dataset, serving, load_model=load_model
        ) as url:
            report = send_traffic(
                url,
                records,
                id_column=ctx.dataset.contract.id_column,
                source=CANARY_SOURCE,
            )
    except Exception:
        clear_alias(
            ctx.store,
            CANARY,
            actor=actor,
            reason=f"canary of run {ctx.run_id} could not run",
            clock=ctx.clock,
        )
        raise
    result = check_canary(
        report,
        version,
        production,
        min_canary_requests=int(_setting(ctx, "min_canary_requests")),
        max_error_rate=float(_setting(ctx, "max_error_rate")),
        max_p95_latency_ms=float(_setting(ctx, "max_p95_latency_ms")),
        max_p95_latency_ratio=float(_setting(ctx, "max_p95_latency_ratio")),
        latency_slack_ms=float(_setting(ctx, "latency_slack_ms")),
        max_prediction_ks=float(_setting(ctx, "max_prediction_ks")),
    )
    details = {**result.details, "staging": dict(staged)}
    evidence = ctx.store.write_json(ctx.key("deploy", "canary.json"), details)
    result = GateResult(
        "I6",
        result.verdict,
        result.reason,
        value=result.value,
        threshold=result.threshold,
        evidence=evidence,
        details=details,
    )

    if result.verdict is Verdict.FAIL:
        clear_alias(
            ctx.store, CANARY, actor=actor, reason=result.reason, clock=ctx.clock
        )
        ctx.scores.record_deployment(
            alias=CANARY,
            model_version=version,
            previous_version=production,
            action="canary_rollback",
            reason=result.reason,
            actor=actor,
            dag_id=ctx.dag_id,
            run_id=ctx.run_id,
        )
        if serving.url:
            reload_service(serving.url)
        ctx.record(result)
        raise GateFailed(result)
    ctx.record(result)
    return {
        "model_version": version,
        "production_version": production,
        "verdict": result.verdict.value,
        "reason": result.reason,
        "evidence": evidence,
    }


# Promotion -------------------------------------------------------------------------


def promote_model_step(
    ctx: RunContext, registered: Mapping[str, Any], canaried: Mapping[str, Any]
) -> dict[str, Any]:
    """Point production at the canaried version and clear the canary.

    The move expects production to be what the canary was compared with: a run that
    promoted in between wins, and this one stops with PromotionConflict.
    """
    version = _version_of(registered)
    if (
        canaried.get("verdict") != Verdict.PASS.value
        or _version_of(canaried) != version
    ):
        raise PromotionConflict(
            f"{version} has no passed canary (canary said {dict(canaried)}); "
            "refusing to promote"
        )
    compared_with = canaried.get("production_version")
    try:
        move = move_alias(
            ctx.store,
            PRODUCTION,
            version,
            actor=ctx.dag_id,
            reason=f"promoted by run {ctx.run_id} after its canary passed",
            clock=ctx.clock,
            expected=compared_with,
        )
    except AliasConflict as exc:
        raise PromotionConflict(
            f"not promoting {version}: {exc}. Its canary was compared with "
            f"{compared_with}; retrain or re-run the release against the new "
            "production"
        ) from exc
    ctx.scores.record_deployment(
        alias=PRODUCTION,
        model_version=version,
        previous_version=compared_with,
        action="promote",
        reason=move["reason"],
        actor=ctx.dag_id,
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
    )
    if resolve_alias(ctx.store, CANARY) == version:
        clear_alias(
            ctx.store,
            CANARY,
            actor=ctx.dag_id,
            reason=f"{version} promoted to production",
            clock=ctx.clock,
        )
    serving = load_serving_settings()
    if serving.url:
        reload_service(serving.url)
    log.info("Promoted %s to production (was %s)", version, compared_with)
    return {"model_version": version, "previous_version": compared_with}


# Rollback --------------------------------------------------------------------------


def _action_of(reason: str) -> str | None:
    if reason.startswith("[") and "]" in reason:
        return reason[1 : reason.index("]")]
    return None


def previous_production_version(store: ArtifactStore) -> str | None:
    """The version production served before the current one, for a default rollback.

    A version that a rollback moved production away from is skipped until it is
    promoted again, so a second rollback never returns to the model just left.
    """
    history = alias_history(store, PRODUCTION)
    current = resolve_alias(store, PRODUCTION)
    left_behind: set[str] = set()
    for move in history:
        if _action_of(move["reason"]) in ROLLBACK_ACTIONS:
            if move.get("previous"):
                left_behind.add(move["previous"])
        else:
            left_behind.discard(move["version"])
    for move in reversed(history):
        candidate = move["version"]
        if candidate and candidate != current and candidate not in left_behind:
            return str(candidate)
    return None


def rollback_production(
    store: ArtifactStore,
    scores: ScoreStore,
    *,
    target_version: str | None,
    reason: str,
    actor: str,
    clock: Callable[[], dt.datetime],
    expected_current: str | None = None,
    action: str = "rollback",
    dag_id: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Point production at ``target_version`` (None: the previous version) in one step.

    Refuses, moving nothing, an unknown version, an empty reason or actor, and a
    production that moved away from ``expected_current``. The move is appended to the
    alias history and to the score store's deployment history.
    """
    if len(reason.strip()) < MIN_REASON_CHARS or not actor.strip():
        raise RollbackRefused(
            f"a rollback needs who asks (got {actor!r}) and a reason of at least "
            f"{MIN_REASON_CHARS} characters (got {reason!r})"
        )
    current = resolve_alias(store, PRODUCTION)
    if current is None:
        raise RollbackRefused("production has never been set: nothing to roll back")
    if expected_current is not None and current != expected_current:
        raise RollbackRefused(
            f"production serves {current}, not {expected_current} as when the "
            "rollback was requested; check the deployment history and ask again"
        )
    target = target_version or previous_production_version(store)
    if target is None:
        raise RollbackRefused(
            f"production ({current}) has no earlier version to roll back to; name a "
            "target version"
        )
    known = list_versions(store)
    if target not in known:
        raise RollbackRefused(
            f"cannot roll back to {target!r}: no such registered model version. "
            f"Recent versions: {known[-5:]}"
        )
    if target == current:
        log.info("Production already serves %s; nothing to roll back", target)
        return {"model_version": target, "previous_version": current, "changed": False}

    started = time.monotonic()
    try:
        move_alias(
            store,
            PRODUCTION,
            target,
            actor=actor,
            reason=f"[{action}] {reason}",
            clock=clock,
            expected=current,
        )
    except RegistryError as exc:
        raise RollbackRefused(f"production was not moved: {exc}") from exc
    seconds = time.monotonic() - started
    scores.record_deployment(
        alias=PRODUCTION,
        model_version=target,
        previous_version=current,
        action=action,
        reason=reason,
        actor=actor,
        dag_id=dag_id,
        run_id=run_id,
        duration_s=seconds,
    )
    log.info(
        "Production rolled back %s -> %s by %s: %s", current, target, actor, reason
    )
    return {
        "model_version": target,
        "previous_version": current,
        "changed": True,
        "seconds": seconds,
        "action": action,
    }


def check_rollback(
    seconds: float | None,
    budget: float,
    error: str | None,
    details: dict[str, Any] | None = None,
) -> GateResult:
    """I7: the rollback worked and the service answered with it within budget."""
    details = dict(details or {})
    if error is not None:
        return GateResult(
            "I7",
            Verdict.FAIL,
            f"rollback failed: {error}",
            value=seconds,
            threshold=budget,
            details=details,
        )
    assert seconds is not None
    if seconds > budget:
        return GateResult(
            "I7",
            Verdict.FAIL,
            f"rollback took {seconds:.2f} s, over the {budget:.1f} s budget",
            value=seconds,
            threshold=budget,
            details=details,
        )
    return GateResult(
        "I7",
        Verdict.PASS,
        f"rolled back and served in {seconds:.2f} s (budget {budget:.1f} s)",
        value=seconds,
        threshold=budget,
        details=details,
    )


def rollback_drill_step(
    ctx: RunContext,
    promoted: Mapping[str, Any],
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """I7: roll production back to the previous version, time it, roll forward.

    The rollback goes through :func:`rollback_production`, the manual DAG's code;
    the clock stops when the service answers a request with the older version. On a
    first release there is nothing earlier to roll back to: the result is
    "insufficient evidence" rather than a drill against an empty alias, which would
    take customers' predictions away. The drill then runs from the next release on.
    """
    version = _version_of(promoted)
    previous = promoted.get("previous_version")
    budget = float(_setting(ctx, "max_rollback_seconds"))
    if not previous:
        result = ctx.record(
            insufficient(
                "I7",
                f"{version} is the first production version: there is no earlier "
                "version to drill a rollback to; the next release drills it",
                threshold=budget,
            )
        )
        return {"model_version": version, "verdict": result.verdict.value}

    serving = load_serving_settings()
    probe = probe_customer(ctx.dataset, "rollback-drill")
    seconds: float | None = None
    error: str | None = None
    with open_service(
        ctx.store, ctx.dataset, serving, prediction_log=False, load_model=load_model
    ) as url:
        started = time.monotonic()
        forward_error: str | None = None
        try:
            _drill_move(
                ctx,
                previous,
                f"rollback drill of release {version}",
                "drill_rollback",
                expected=version,
            )
            verify_serving(url, previous, probe, timeout_seconds=budget)
            seconds = time.monotonic() - started
        except (DeploymentError, RegistryError) as exc:
            error = str(exc)
        finally:
            # Whatever happened above, production goes back to the release.
            forward_error = _roll_forward(ctx, url, version, probe, budget)
    details = {
        "model_version": version,
        "rolled_back_to": previous,
        "rolled_forward": forward_error is None,
    }
    if forward_error:
        error = (
            f"{error or 'drill rollback passed'}; roll forward failed: {forward_error}"
        )
    result = ctx.record(check_rollback(seconds, budget, error, details))
    result.raise_if_failed()
    return {
        "model_version": version,
        "verdict": result.verdict.value,
        "seconds": seconds,
    }


def _drill_move(
    ctx: RunContext,
    target: str,
    reason: str,
    action: str,
    expected: str | None = None,
) -> None:
    rollback_production(
        ctx.store,
        ctx.scores,
        target_version=target,
        reason=reason,
        actor=ctx.dag_id,
        clock=ctx.clock,
        expected_current=expected,
        action=action,
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
    )


def _roll_forward(
    ctx: RunContext,
    url: str,
    version: str,
    probe: dict[str, Any],
    budget: float,
) -> str | None:
    try:
        if resolve_alias(ctx.store, PRODUCTION) != version:
            _drill_move(
                ctx,
                version,
                f"roll forward after the drill of {version}",
                "drill_roll_forward",
            )
        verify_serving(url, version, probe, timeout_seconds=budget)
    except (DeploymentError, RegistryError) as exc:
        message = (
            f"production may not serve {version} after the rollback drill: {exc}. "
            "Check the churn_rollback DAG and the service's /health"
        )
        log.warning(message)
        ctx.scores.notify(
            "rollback_drill", message, dag_id=ctx.dag_id, run_id=ctx.run_id
        )
        return str(exc)
    return None


# The manual rollback DAG's steps ---------------------------------------------------


def validate_rollback_step(ctx: RunContext, actor: str) -> dict[str, Any]:
    """Resolve the form's target (empty: the previous version) and check it."""
    reason = str(ctx.params.get("reason") or "")
    requested = str(ctx.params.get("target_version") or "").strip() or None
    if len(reason.strip()) < MIN_REASON_CHARS:
        raise RollbackRefused(
            f"give a reason of at least {MIN_REASON_CHARS} characters; got {reason!r}"
        )
    current = resolve_alias(ctx.store, PRODUCTION)
    if current is None:
        raise RollbackRefused("production has never been set: nothing to roll back")
    target = requested or previous_production_version(ctx.store)
    if target is None:
        raise RollbackRefused(
            f"production ({current}) has no earlier version; name a target version"
        )
    known = list_versions(ctx.store)
    if target not in known:
        raise RollbackRefused(
            f"cannot roll back to {target!r}: no such registered model version. "
            f"Recent versions: {known[-5:]}"
        )
    if target == current:
        raise RollbackRefused(f"production already serves {target}; nothing to do")
    log.info("Rollback requested by %s: %s -> %s (%s)", actor, current, target, reason)
    return {
        "target_version": target,
        "current_version": current,
        "reason": reason,
        "actor": actor or "airflow",
    }


def rollback_production_step(
    ctx: RunContext, request: Mapping[str, Any]
) -> dict[str, Any]:
    """Move production to the validated target; a retry after success is a no-op."""
    if resolve_alias(ctx.store, PRODUCTION) == request["target_version"]:
        return {
            "model_version": request["target_version"],
            "previous_version": request["current_version"],
            "changed": False,
            "started_at": time.time(),
        }
    started_at = time.time()
    moved = rollback_production(
        ctx.store,
        ctx.scores,
        target_version=request["target_version"],
        reason=request["reason"],
        actor=request["actor"],
        clock=ctx.clock,
        expected_current=request["current_version"],
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
    )
    return {**moved, "started_at": started_at}


def verify_serving_step(
    ctx: RunContext,
    rolled_back: Mapping[str, Any],
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """Check the service answers with the version rolled back to, and how fast."""
    version = rolled_back["model_version"]
    serving = load_serving_settings()
    budget = float(_setting(ctx, "max_rollback_seconds"))
    probe = probe_customer(ctx.dataset, "manual-rollback")
    with open_service(
        ctx.store, ctx.dataset, serving, prediction_log=False, load_model=load_model
    ) as url:
        verify_serving(url, version, probe, timeout_seconds=budget)
    seconds = time.time() - float(rolled_back["started_at"])
    return {"model_version": version, "seconds": seconds, "service": serving.url}


def record_rollback_step(
    ctx: RunContext,
    request: Mapping[str, Any],
    verified: Mapping[str, Any],
) -> dict[str, Any]:
    """I7 from a real rollback: the measured seconds, the report and a notification."""
    budget = float(_setting(ctx, "max_rollback_seconds"))
    report = {**dict(request), **dict(verified), "budget_seconds": budget}
    evidence = ctx.store.write_json(ctx.key("deploy", "rollback.json"), report)
    measured = check_rollback(float(verified["seconds"]), budget, None, report)
    result = ctx.record(
        GateResult(
            "I7",
            measured.verdict,
            f"manual rollback by {request['actor']} "
            f"{request['current_version']} -> {request['target_version']}: "
            f"{measured.reason}",
            value=measured.value,
            threshold=measured.threshold,
            evidence=evidence,
            details=report,
        )
    )
    ctx.scores.notify(
        "rollback",
        f"{request['actor']} rolled production back from "
        f"{request['current_version']} to {request['target_version']}: "
        f"{request['reason']}",
        severity="info",
        dag_id=ctx.dag_id,
        run_id=ctx.run_id,
    )
    return {"verdict": result.verdict.value, "evidence": evidence}
