"""``DingTalkHook``: client of the DingTalk approval (OA 审批) API: token, instance ids, details, comments.

Speaks the "old" oapi style (``https://oapi.dingtalk.com``, ``?access_token=`` in the query string,
always HTTP 200 with an ``errcode`` in the body). See docs/hook-dingtalk.md for the behaviour in
front of every kind of failure the real service is known to produce.

The hook is a ``BaseHook`` owning plain ``requests`` sessions (one per thread); what an answer
means lives in ``dingtalk_answers``, the shared pacing and token state in ``dingtalk_pacing``,
the listing windows in ``dingtalk_listing``, and retry, back-off and masking in ``transport``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook

from dingtalk_kingdee.errors import DingTalkError, DingTalkQuotaExhausted, DingTalkUnavailable
from dingtalk_kingdee.hooks.dingtalk_answers import classify_answer, resolve_answer
from dingtalk_kingdee.hooks.dingtalk_config import DingTalkConnectionConfig, RetryPolicy
from dingtalk_kingdee.hooks.dingtalk_listing import (
    LIST_ID_CAP,
    LIST_PAGE_SIZE,
    check_window,
    ms_iso,
    slice_window,
    split_slice,
    to_epoch_ms,
)
from dingtalk_kingdee.hooks.dingtalk_meter import CallMeter
from dingtalk_kingdee.hooks.dingtalk_pacing import (
    Pacer,
    reset_shared_state,
    shared_limiter,
    shared_tokens,
)
from dingtalk_kingdee.hooks.transport import (
    ErrorResolution,
    ResponseAction,
    call_with_retries,
    new_session,
    redact,
    register_secret,
    resolve_request_exception,
)

# What pipeline, benchmarks and tests import from here, besides the hook.
__all__ = ["DingTalkConnectionConfig", "DingTalkHook", "RetryPolicy", "reset_shared_state", "to_epoch_ms"]

API_GETTOKEN = "gettoken"
API_LISTIDS = "processinstance/listids"
API_GET = "processinstance/get"
API_COMMENT = "process/instance/comment/add"
API_DEPARTMENTS = "v2/department/listsub"
API_USERS = "v2/user/list"
PATHS = {
    API_GETTOKEN: "/gettoken",
    API_LISTIDS: "/topapi/processinstance/listids",
    API_GET: "/topapi/processinstance/get",
    API_COMMENT: "/topapi/process/instance/comment/add",
    API_DEPARTMENTS: "/topapi/v2/department/listsub",
    API_USERS: "/topapi/v2/user/list",
}
# Contacts (reference "Contacts"): user/list pages hold at most 100 users.
USER_PAGE_SIZE = 100
PROGRESS_EVERY = 200


class _GiveUp:
    """The exceptions a DingTalk call raises when the retry loop gives up (``transport.RetryErrors``)."""

    def __init__(self, api: str) -> None:
        self.api = api

    def failed(self, resolution: ErrorResolution) -> Exception:
        if resolution.error is not None:
            return resolution.error
        return DingTalkUnavailable(f"DingTalk {self.api}: {resolution.message}")

    def outcome_unknown(self, resolution: ErrorResolution) -> Exception:
        return DingTalkUnavailable(f"DingTalk {self.api}: {resolution.message}; the call may or may not "
                                   "have taken effect, so it is not repeated blindly")

    def exhausted(self, resolution: ErrorResolution, failures: int) -> Exception:
        if resolution.budget == "throttled":
            return DingTalkUnavailable(f"DingTalk {self.api} still throttled after {failures - 1} waits: "
                                       f"{resolution.message}")
        if resolution.budget == "busy":
            return DingTalkUnavailable(f"DingTalk {self.api} busy (errcode -1) after {failures - 1} "
                                       f"retries: {resolution.message}")
        return DingTalkUnavailable(f"DingTalk {self.api} failed {failures} times, last: {resolution.message}")


class DingTalkHook(BaseHook):
    """Client of the DingTalk approval API for one app (connection: app key + app secret).

    Connection: ``host`` = base URL (default https://oapi.dingtalk.com), ``login`` = app key,
    ``password`` = app secret, extra ``{"agent_id": "...", "qps": 20}`` and optionally
    ``connect_timeout``, ``read_timeout`` (seconds) and ``max_workers`` (legacy
    ``extra__dingtalk__<field>`` keys are read too).
    """

    conn_name_attr = "dingtalk_conn_id"
    default_conn_name = "dingtalk_default"
    conn_type = "dingtalk"
    hook_name = "DingTalk Approval (OA)"

    def __init__(
        self,
        dingtalk_conn_id: str = default_conn_name,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_workers: int | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dingtalk_conn_id = dingtalk_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._overrides = {"connect_timeout": connect_timeout, "read_timeout": read_timeout,
                           "max_workers": max_workers}
        self._config: DingTalkConnectionConfig | None = None
        self._config_lock = threading.Lock()
        self._local = threading.local()
        self._open_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        # Every HTTP call this hook makes, per API (the DingTalk call ledger reads it).
        self.meter = CallMeter()
        # Set by the first 90020 answer: later calls of this hook fail at once instead of spending
        # a request each on a quota that stays spent until next month.
        self._quota_error: DingTalkQuotaExhausted | None = None

    # ---- Airflow UI -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: fetch an access token with the app key and secret."""
        try:
            self._config = None
            self._fetch_token()
        except Exception as exc:
            return False, redact(str(exc))
        return True, "DingTalk issued an access token for this app"

    # ---- connection and sessions ------------------------------------------------------------

    @property
    def config(self) -> DingTalkConnectionConfig:
        """The connection, read once per hook (thread-safe: the pool's threads share the hook)."""
        if self._config is None:
            with self._config_lock:
                if self._config is None:
                    config = DingTalkConnectionConfig.from_connection(
                        self.get_connection(self.dingtalk_conn_id), **self._overrides)
                    register_secret(config.app_secret)
                    redis_password = urlsplit(config.rate_limit_redis_url).password
                    if redis_password:  # a Redis URL may carry one: never in a log line
                        register_secret(redis_password)
                    self._config = config
        return self._config

    def get_conn(self) -> requests.Session:
        """A new plain session: no basic auth (the app secret must never leave in a header) and
        no connection extras as headers (``qps`` is not a header). The caller closes it."""
        return new_session({"Accept": "application/json"})

    def _thread_session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.get_conn()
            with self._sessions_lock:
                self._open_sessions.append(session)
        return session

    def close(self) -> None:
        """Close every HTTP session this hook opened."""
        with self._sessions_lock:
            sessions, self._open_sessions = self._open_sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def _limiter(self, api: str) -> Pacer:
        config = self.config
        return shared_limiter(config.base_url, config.app_key, api, config.qps, config.rate_limit_redis_url)

    # ---- transport --------------------------------------------------------------------------

    def _send(self, session: requests.Session, method: str, api: str, params: dict[str, str],
              body: dict | None) -> tuple[dict, ErrorResolution]:
        """One HTTP exchange → (answer body, resolution); never raises for a transport failure."""
        config = self.config
        try:
            response = session.request(
                method, config.base_url + PATHS[api], params=params, json=body,
                timeout=(config.connect_timeout, config.read_timeout), allow_redirects=False,
            )
            content = response.content
        except requests.exceptions.RequestException as exc:
            return {}, resolve_request_exception(exc, "DingTalk")
        answer = classify_answer(response.status_code, content)
        return answer.body or {}, resolve_answer(answer, api)

    def _fetch_token(self) -> tuple[str, float]:
        config = self.config
        body = self._call(API_GETTOKEN, "GET", None, with_token=False)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise DingTalkUnavailable("gettoken answered errcode 0 without an access_token")
        register_secret(token)
        try:
            expires_in = float(body.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        self.log.info("Fetched a DingTalk access token for app %s (valid %.0f s)", config.app_key, expires_in)
        return token, expires_in

    def _token_key(self) -> tuple[str, str]:
        return self.config.base_url, self.config.app_key

    def _call(self, api: str, method: str, body: dict | None, *, with_token: bool = True,
              idempotent: bool = True, session: requests.Session | None = None) -> dict:
        """One API call with every retry rule (``transport.retry``); returns the answer body (errcode 0)."""
        config = self.config
        session = session or self._thread_session()
        limiter = self._limiter(api)
        sent_token: list[str] = []  # the token of the latest attempt, for refresh_auth

        def attempt() -> tuple[dict, ErrorResolution]:
            spent = self._quota_error
            if spent is not None:
                raise DingTalkQuotaExhausted(spent.errcode, spent.errmsg, spent.sub_code, api)
            # Wait for the slot first, then read the token: a token read before a long wait in
            # the queue may expire before it is sent.
            limiter.acquire()
            if with_token:
                token = shared_tokens.get(self._token_key(), self._fetch_token)
                sent_token[:] = [token]
                params = {"access_token": token}
            else:
                params = {"appkey": config.app_key, "appsecret": config.app_secret}
            self.meter.count(api)
            answer, resolution = self._send(session, method, api, params, body)
            if isinstance(resolution.error, DingTalkQuotaExhausted):
                self._quota_error = resolution.error
                self.log.error("DingTalk monthly call quota exhausted (errcode 90020) on %s: %s; no more "
                               "DingTalk calls from this hook", api, resolution.message)
            return answer, resolution

        def refresh_token(resolution: ErrorResolution) -> None:
            self.log.info("DingTalk refused the access token on %s (%s); fetching a new one", api,
                          resolution.message)
            shared_tokens.invalidate(self._token_key(), sent_token[0])

        def pause(seconds: float, resolution: ErrorResolution) -> None:
            if resolution.action is ResponseAction.RATE_LIMITED:
                limiter.penalize(seconds)  # everybody on this app and API waits, not just us
            else:
                time.sleep(seconds)

        return call_with_retries(
            attempt, budgets=self.retry_policy.budgets(), idempotent=idempotent, errors=_GiveUp(api),
            wait=pause, refresh_auth=refresh_token if with_token else None, log=self.log,
            label=f"DingTalk {api}")

    # ---- public API -------------------------------------------------------------------------

    def call_counts(self) -> dict[str, int]:
        """HTTP calls this hook made so far, per API (``processinstance/get``, ``gettoken``, ...)."""
        return self.meter.snapshot()

    def list_instance_ids(self, process_code: str, start: datetime, end: datetime) -> Iterator[str]:
        """Ids of the instances of ``process_code`` STARTED in [start, end], each once.

        The window is cut into ≤120-day slices; a slice that hits the 10,000-id cap of one query
        is halved and listed again. ``end`` is kept a minute behind now.
        """
        end = check_window(start, end, datetime.now(UTC))
        return self._list_ids(process_code, to_epoch_ms(start), to_epoch_ms(end))

    def _list_ids(self, process_code: str, start_ms: int, end_ms: int) -> Iterator[str]:
        seen: set[str] = set()
        # (lower, upper, earlier): ``earlier`` is the first half of a capped slice, listed only if this
        # (later) half shows the capped listing stopped before the middle.
        pending: deque[tuple[int, int, tuple[int, int] | None]] = deque(
            (lower, upper, None) for lower, upper in slice_window(start_ms, end_ms))
        self.log.info("Listing %s instances in %d slice(s)", process_code, len(pending))
        while pending:
            lower, upper, earlier = pending.popleft()
            returned = 0
            first_was_had: bool | None = None
            for instance_id in self._list_slice(process_code, lower, upper):
                returned += 1
                if first_was_had is None:
                    first_was_had = instance_id in seen
                if instance_id not in seen:
                    seen.add(instance_id)
                    yield instance_id
            if earlier is not None and not first_was_had:
                pending.appendleft((*earlier, None))
            elif earlier is not None:
                self.log.info("Slice %s..%s: the capped listing already gave all its ids; not listed again",
                              ms_iso(earlier[0]), ms_iso(earlier[1]))
            if returned >= LIST_ID_CAP:
                halves = split_slice(lower, upper)
                if halves is None:
                    self.log.error("Slice %d..%d ms holds %d+ ids and cannot be split further; "
                                   "some ids may be missing", lower, upper, LIST_ID_CAP)
                else:
                    # The capped answer holds the OLDEST ids of the slice. List the later half first:
                    # if its oldest id was among them, the earlier half holds nothing new.
                    self.log.info("Slice %s..%s hit the %d-id cap; listing its later half first",
                                  ms_iso(lower), ms_iso(upper), LIST_ID_CAP)
                    pending.appendleft((*halves[1], halves[0]))
            self.log.info("Listed %d ids so far (%s: slice %s..%s gave %d)",
                          len(seen), process_code, ms_iso(lower), ms_iso(upper), returned)
        self.log.info("Listed %d ids of %s", len(seen), process_code)

    def _list_slice(self, process_code: str, start_ms: int, end_ms: int) -> Iterator[str]:
        cursor: Any = 0
        seen_cursors = {json.dumps(cursor)}
        pages = 0
        while True:
            body = self._call(API_LISTIDS, "POST", {
                "process_code": process_code, "start_time": start_ms, "end_time": end_ms,
                "size": LIST_PAGE_SIZE, "cursor": cursor,
            })
            result = body.get("result") or {}
            for instance_id in result.get("list") or []:
                yield str(instance_id)
            pages += 1
            if pages % 50 == 0:
                self.log.info("Listing %s: %d pages of slice %s..%s read", process_code, pages,
                              ms_iso(start_ms), ms_iso(end_ms))
            next_cursor = result.get("next_cursor")
            if next_cursor is None:
                return
            if json.dumps(next_cursor) in seen_cursors:
                self.log.warning("DingTalk repeated cursor %r on %s; slice ends here",
                                 next_cursor, process_code)
                return
            seen_cursors.add(json.dumps(next_cursor))
            cursor = next_cursor

    def get_instance(self, instance_id: str) -> dict:
        """The ``process_instance`` object of one instance, unchanged."""
        return self._get_instance(instance_id, None)

    def _get_instance(self, instance_id: str, session: requests.Session | None) -> dict:
        body = self._call(API_GET, "POST", {"process_instance_id": instance_id}, session=session)
        instance = body.get("process_instance")
        if not isinstance(instance, dict):
            raise DingTalkError(0, f"answer for {instance_id} has no process_instance object", api=API_GET)
        return instance

    def get_instances(self, ids: Iterable[str]) -> Iterator[tuple[str, dict]]:
        """``(id, process_instance)`` for every id, fetched concurrently within the app's QPS
        budget, yielded as they complete (not in input order). Repeated ids are fetched once."""
        return self._get_many(ids, self.config.max_workers)

    def _get_many(self, ids: Iterable[str], workers: int) -> Iterator[tuple[str, dict]]:
        # One session per pool thread, closed when this call ends (other calls keep theirs).
        local = threading.local()
        opened: list[requests.Session] = []

        def fetch(instance_id: str) -> dict:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = self.get_conn()
                opened.append(session)
            return self._get_instance(instance_id, session)

        id_iter = iter(ids)
        submitted: set[str] = set()
        in_flight: dict[Future, str] = {}
        done_count = 0
        started = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dingtalk-get")

        def top_up() -> None:
            # Bounded look-ahead: ids may be a lazy listing; never read it all up front.
            while len(in_flight) < workers * 2:
                instance_id = next(id_iter, None)
                if instance_id is None:
                    return
                if instance_id in submitted:
                    continue
                submitted.add(instance_id)
                in_flight[pool.submit(fetch, instance_id)] = instance_id

        try:
            top_up()
            while in_flight:
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in finished:
                    instance_id = in_flight.pop(future)
                    instance = future.result()
                    done_count += 1
                    if done_count % PROGRESS_EVERY == 0:
                        elapsed = time.monotonic() - started
                        self.log.info("Fetched %d instances (%.1f/s)", done_count,
                                      done_count / elapsed if elapsed else 0.0)
                    yield instance_id, instance
                top_up()
            elapsed = time.monotonic() - started
            self.log.info("Fetched %d instances in %.1f s", done_count, elapsed)
        finally:
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for session in opened:
                session.close()

    # ---- contacts (for value maps; metered calls like every other) -----------------------------

    def list_departments(self, root_dept_id: int = 1) -> list[dict[str, Any]]:
        """Every department below ``root_dept_id``, walked breadth-first with one
        ``department/listsub`` call per department: ``{"dept_id", "name", "parent_id"}`` each."""
        found: list[dict[str, Any]] = []
        seen = {int(root_dept_id)}
        pending = deque([int(root_dept_id)])
        while pending:
            parent = pending.popleft()
            body = self._call(API_DEPARTMENTS, "POST", {"dept_id": parent})
            for dept in body.get("result") or []:
                dept_id = int(dept["dept_id"])
                if dept_id in seen:  # a cycle would walk forever
                    continue
                seen.add(dept_id)
                found.append({"dept_id": dept_id, "name": dept.get("name", ""),
                              "parent_id": int(dept.get("parent_id", parent))})
                pending.append(dept_id)
        self.log.info("Read %d DingTalk departments under %d (%d listsub calls)", len(found), root_dept_id,
                      len(seen))
        return found

    def list_department_users(self, dept_id: int) -> list[dict[str, Any]]:
        """The direct members of a department, every page of ``user/list`` (100 per page)."""
        users: list[dict[str, Any]] = []
        cursor: Any = 0
        seen_cursors = {json.dumps(cursor)}
        while True:
            body = self._call(API_USERS, "POST", {"dept_id": int(dept_id), "cursor": cursor, "size": USER_PAGE_SIZE})
            result = body.get("result") or {}
            users.extend(result.get("list") or [])
            next_cursor = result.get("next_cursor")
            if not result.get("has_more") or next_cursor is None:
                return users
            if json.dumps(next_cursor) in seen_cursors:
                self.log.warning("DingTalk repeated cursor %r listing department %s; stopping", next_cursor, dept_id)
                return users
            seen_cursors.add(json.dumps(next_cursor))
            cursor = next_cursor

    def add_comment(self, instance_id: str, user_id: str, text: str) -> None:
        """Add a comment to an instance (internal apps only). Not repeated after an ambiguous
        failure (timeout, dropped connection, 5xx): that raises ``DingTalkUnavailable``."""
        body = self._call(API_COMMENT, "POST", {"request": {
            "process_instance_id": instance_id, "comment_userid": user_id, "text": text,
        }}, idempotent=False)
        if body.get("result") is False or body.get("success") is False:
            raise DingTalkError(int(body.get("errcode", 0) or 0),
                                f"comment on {instance_id} not accepted: {json.dumps(body)[:200]}",
                                api=API_COMMENT)
