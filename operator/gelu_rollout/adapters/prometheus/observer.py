"""Reads one tick's observations of a rollout from Prometheus (the imperative shell).

``PrometheusObserver.observe`` sends the tick's batch of instant queries, all evaluated
at the same instant (``time=at``), a few at a time, and hands the answers to the pure
``parse.to_observations``. Prometheus unreachable, too slow, answering with an error or
with nothing all give both arms None and a ``missing_reason``: the gates then say
Inconclusive, never Pass, and ``observe`` does not raise for any of these. The optional
latency queries (means and the request-duration histogram) are the exception: one that
fails or does not answer in time is left out, and only its field is None. It blocks:
call it from a thread (``asyncio.to_thread``) in async code.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from gelu_rollout.adapters.prometheus.parse import missing, to_observations
from gelu_rollout.adapters.prometheus.queries import DEFAULT_SCRAPE_INTERVAL_SECONDS, build_plan
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.spec.model import LatencyHistogramSource

_REASON_LIMIT = 300


class Observer(Protocol):
    """What the operator needs from a metrics source; the fake in ``fake.py`` has it too."""

    def observe(
        self,
        namespace: str,
        rollout: str,
        model: str,
        interval_seconds: float,
        burn_windows_seconds: Sequence[float],
        at: datetime,
        *,
        latency_histogram: LatencyHistogramSource | None = None,
        rollout_name: str | None = None,
    ) -> Observations:
        """The rollout's observations over ``interval_seconds`` ending at ``at``.

        ``rollout`` is the rollout's label value (its pods' ``rollout`` target label);
        ``latency_histogram`` the spec's request-duration histogram, if any, whose default
        arm label values are the Services of ``rollout_name`` (default ``rollout``), the
        rollout's own name.
        """
        ...


class _UnansweredError(Exception):
    """Some queries had no answer when the tick's time ran out."""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


class PrometheusObserver:
    """Observations from the Prometheus HTTP API at ``url``.

    ``timeout_seconds`` bounds each query and the whole batch; ``scrape_interval_seconds``
    is how often Prometheus scrapes the pods (the shortest range a query may use is two
    scrapes). Queries are never retried within a tick: the next tick asks again.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 5.0,
        *,
        scrape_interval_seconds: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
        max_workers: int = 4,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.scrape_interval_seconds = scrape_interval_seconds
        self.max_workers = max_workers
        self._client = PrometheusConnect(
            url=self.url,
            # Annotated int, passed on to requests, which takes float seconds.
            timeout=timeout_seconds,  # type: ignore[arg-type]
            # No retries (the next tick asks again); read=False keeps a read timeout a
            # Timeout instead of a connection error, as requests' own default does.
            retry=Retry(total=0, read=False),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def observe(
        self,
        namespace: str,
        rollout: str,
        model: str,
        interval_seconds: float,
        burn_windows_seconds: Sequence[float],
        at: datetime,
        *,
        latency_histogram: LatencyHistogramSource | None = None,
        rollout_name: str | None = None,
    ) -> Observations:
        """One batch of queries for one rollout's tick ending at ``at`` (timezone-aware)."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        plan = build_plan(
            namespace,
            rollout,
            model,
            interval_seconds,
            burn_windows_seconds,
            scrape_interval_seconds=self.scrape_interval_seconds,
            latency_histogram=latency_histogram,
            rollout_name=rollout_name,
        )
        try:
            results = self._query_all(plan.expressions(), at, plan.optional_expressions())
        except _UnansweredError as error:
            reason = str(error)
        except requests.exceptions.Timeout:
            reason = f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s"
        except requests.exceptions.ConnectionError as error:
            reason = f"Prometheus unreachable at {self.url}: {type(error).__name__}"
        except PrometheusApiClientException as error:
            reason = f"Prometheus query failed: {error}"
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError) as error:
            reason = f"unexpected answer from Prometheus at {self.url}: {error!r}"
        else:
            return to_observations(plan, results, at=at)
        return missing(at, interval_seconds, _short(reason))

    def _query(self, expr: str, params: dict[str, str]) -> list[dict[str, Any]]:
        result = self._client.custom_query(expr, params=params)
        if not isinstance(result, list):
            raise TypeError(f"expected a vector, got {type(result).__name__}")
        return result

    def _query_optional(self, expr: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        """``_query``, with None for any failure: the answer is optional."""
        try:
            return self._query(expr, params)
        except (
            requests.exceptions.RequestException,
            PrometheusApiClientException,
            ValueError,
            KeyError,
            TypeError,
        ):
            return None

    def _query_all(
        self, expressions: Sequence[str], at: datetime, optional: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Every expression's result vector; raises the first error, or _UnansweredError.
        An ``optional`` expression that fails or is still unanswered when the time is up is
        left out of the answer instead."""
        params = {
            "time": f"{at.timestamp():.3f}",
            # Prometheus gives up too, instead of computing an answer nobody waits for.
            "timeout": f"{self.timeout_seconds:g}",
        }
        pool = ThreadPoolExecutor(
            max_workers=max(1, min(self.max_workers, len(expressions))),
            thread_name_prefix="prometheus-query",
        )
        try:
            futures: dict[str, Future[list[dict[str, Any]] | None]] = {
                expr: pool.submit(
                    self._query_optional if expr in optional else self._query, expr, params
                )
                # The required first: a slow optional query never holds one of them up.
                for expr in sorted(expressions, key=lambda e: e in optional)
            }
            done, pending = wait(
                futures.values(), timeout=self.timeout_seconds, return_when=FIRST_EXCEPTION
            )
            for future in done:
                if (error := future.exception()) is not None:
                    raise error
            unanswered = [e for e, f in futures.items() if f in pending and e not in optional]
            if unanswered:
                raise _UnansweredError(
                    f"Prometheus at {self.url} answered {len(done)} of {len(futures)} queries "
                    f"within {self.timeout_seconds:g}s"
                )
            answers = {e: f.result() for e, f in futures.items() if f not in pending}
            return {e: answer for e, answer in answers.items() if answer is not None}
        finally:
            # Queries still running end by their own timeout; nothing waits for them.
            pool.shutdown(wait=False, cancel_futures=True)
