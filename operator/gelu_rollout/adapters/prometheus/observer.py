"""Reads one tick's observations of a rollout from Prometheus (the imperative shell).

``PrometheusObserver.observe`` sends the tick's batch of instant queries, all evaluated
at the same instant (``time=at``), a few at a time, and hands the answers to the pure
``parse.to_observations``. Prometheus unreachable, too slow, answering with an error or
with nothing all give both arms None and a ``missing_reason``: the gates then say
Inconclusive, never Pass, and ``observe`` does not raise for any of these. The optional
latency queries (means and the request-duration histogram) are the exception: one that
fails or does not answer in time is left out, and only its field is None. It blocks:
call it from a thread (``asyncio.to_thread``) in async code.

One observer serves every rollout of the operator: its queries share one bounded thread
pool and one HTTP connection pool (a keep-alive connection per worker), both made when the
observer is and closed with it, instead of a pool of threads per observation. The queries go
through ``urllib3`` itself: ``requests`` (and ``prometheus_api_client`` on top of it) cost
about twice the CPU per query, which at 28 queries per rollout per tick was most of the
operator's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import unquote, urlencode, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as HTTPTimeoutError

from gelu_rollout.adapters.prometheus.parse import missing, to_observations
from gelu_rollout.adapters.prometheus.queries import DEFAULT_SCRAPE_INTERVAL_SECONDS, build_plan
from gelu_rollout.rollout.observations import Observations
from gelu_rollout.spec.model import LatencyHistogramSource

_REASON_LIMIT = 300
DEFAULT_QUERY_WORKERS: Final = 4
"""Queries in flight at once, for all rollouts together: the observations that run at the
same time (as many as the event loop's default executor has threads) queue their queries
here, so Prometheus and the operator's GIL see a bounded number, not 4 per observation.
Four answered 1000 rollouts' 930 queries a second in the scale benchmark."""


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


class PrometheusQueryError(Exception):
    """Prometheus answered a query with an HTTP error."""


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
        max_workers: int = DEFAULT_QUERY_WORKERS,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.scrape_interval_seconds = scrape_interval_seconds
        self.max_workers = max_workers
        parts = urlsplit(self.url)
        self._query_path = parts.path + "/api/v1/query"
        # Credentials in the URL (http://user:password@host) go as basic auth, as before.
        self._headers = (
            urllib3.make_headers(
                basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            )
            if parts.username
            else {}
        )
        # As many kept-alive connections as workers, so none is opened and dropped per query
        # (http or https as the URL says). No retries: the next tick asks again.
        self._connections = urllib3.connection_from_url(
            self.url,
            maxsize=max_workers,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
        )
        # The threads start as the first queries come, up to max_workers, and stay.
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="prometheus")

    def close(self) -> None:
        # Queries still running end by their own timeout; nothing waits for them.
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._connections.close()

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
        except NewConnectionError as error:  # urllib3 makes it a kind of connect timeout
            reason = f"Prometheus unreachable at {self.url}: {type(error).__name__}"
        except HTTPTimeoutError:
            reason = f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s"
        except HTTPError as error:  # a reset connection, a failed TLS handshake
            reason = f"Prometheus unreachable at {self.url}: {type(error).__name__}"
        except PrometheusQueryError as error:
            reason = f"Prometheus query failed: {error}"
        except (ValueError, KeyError, TypeError) as error:
            reason = f"unexpected answer from Prometheus at {self.url}: {error!r}"
        else:
            return to_observations(plan, results, at=at)
        return missing(at, interval_seconds, _short(reason))

    def _query(self, expr: str, params: dict[str, str]) -> list[dict[str, Any]]:
        response = self._connections.urlopen(
            "GET",
            f"{self._query_path}?{urlencode({'query': expr, **params})}",
            headers=self._headers,
        )
        if response.status != 200:
            raise PrometheusQueryError(f"HTTP Status Code {response.status} ({response.data!r})")
        result = json.loads(response.data)["data"]["result"]
        if not isinstance(result, list):
            raise TypeError(f"expected a vector, got {type(result).__name__}")
        return result

    def _query_optional(self, expr: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        """``_query``, with None for any failure: the answer is optional."""
        try:
            return self._query(expr, params)
        except (HTTPError, PrometheusQueryError, ValueError, KeyError, TypeError):
            return None

    def _query_all(
        self, expressions: Sequence[str], at: datetime, optional: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Every expression's result vector; raises the first error, or _UnansweredError.
        An ``optional`` expression that fails or is still unanswered when the time is up is
        left out of the answer instead. The time counts from the batch's submission: waiting
        for a worker of the shared pool is part of it."""
        params = {
            "time": f"{at.timestamp():.3f}",
            # Prometheus gives up too, instead of computing an answer nobody waits for.
            "timeout": f"{self.timeout_seconds:g}",
        }
        futures: dict[str, Future[list[dict[str, Any]] | None]] = {}
        try:
            # The required first: a slow optional query never holds one of them up.
            for expr in sorted(expressions, key=lambda e: e in optional):
                query = self._query_optional if expr in optional else self._query
                futures[expr] = self._pool.submit(query, expr, params)
        except RuntimeError:  # the observer is closed: the operator is stopping
            self._cancel(futures.values())
            raise _UnansweredError(f"the observer of Prometheus at {self.url} is closed") from None
        try:
            done, _ = wait(
                futures.values(), timeout=self.timeout_seconds, return_when=FIRST_EXCEPTION
            )
            # Cancelled ones (the observer closed meanwhile) are unanswered.
            answered = {f for f in done if not f.cancelled()}
            for future in answered:
                if (error := future.exception()) is not None:
                    raise error
            unanswered = [e for e, f in futures.items() if f not in answered and e not in optional]
            if unanswered:
                raise _UnansweredError(
                    f"Prometheus at {self.url} answered {len(answered)} of {len(futures)} "
                    f"queries within {self.timeout_seconds:g}s"
                )
            answers = {e: f.result() for e, f in futures.items() if f in answered}
            return {e: answer for e, answer in answers.items() if answer is not None}
        finally:
            # Those not started yet give their place in the pool to other rollouts' queries;
            # those running end by their own timeout.
            self._cancel(futures.values())

    @staticmethod
    def _cancel(futures: Iterable[Future[Any]]) -> None:
        for future in futures:
            future.cancel()
