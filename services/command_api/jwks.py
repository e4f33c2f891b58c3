"""The token issuer's public keys (JWT_JWKS_URL), kept so that a slow or dead JWKS endpoint never
stalls a request: fetched in the background, one fetch at a time, never under a lock a request
waits on.

- A fresh set (younger than JWT_JWKS_REFRESH_S) is used as it is.
- An older one is still used, and a background refresh is started; during an outage of the
  endpoint the last good set keeps serving, but only up to JWT_JWKS_MAX_STALE_S after it was
  fetched (bounded: a key the issuer revoked stops working by then at the latest).
- A `kid` not in the set starts a refresh at most once per JWT_JWKS_UNKNOWN_KID_COOLDOWN_S, so
  random kids cannot make the API hammer the issuer; only the request that started it waits for
  it (at most the fetch timeout), the others are answered at once.
- Before the first good fetch (or after the set went too stale), a request waits at most the fetch
  timeout for a fetch in flight; after a failed fetch none is started for the cooldown: requests
  get KeysUnavailable (503) at once instead of queueing on the endpoint."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jwt import PyJWK, PyJWKClient
from jwt.exceptions import PyJWKClientError, PyJWKError, PyJWKSetError

log = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The JWKS endpoint could not be reached and no usable key set is held."""


class UnknownKey(Exception):
    """The key set, fresh enough, has no key with this `kid`."""


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    refresh_s: float = 300.0
    max_stale_s: float = 3600.0
    unknown_kid_cooldown_s: float = 30.0
    timeout_s: float = 2.0


class JwksKeys:
    """One per process. `fetch` returns the signing keys (or raises); the clock is injectable for
    tests of the policy."""

    def __init__(
        self,
        url: str,
        policy: JwksPolicy,
        *,
        fetch: Callable[[], list[PyJWK]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        client = PyJWKClient(url, cache_jwk_set=False, timeout=policy.timeout_s)
        self._fetch = fetch or (lambda: client.get_signing_keys(refresh=True))
        self._clock = clock
        self._lock = threading.Lock()  # held for bookkeeping only, never during a fetch
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_failed = False
        self._in_flight: threading.Event | None = None
        self.fetches = 0

    def prefetch(self) -> None:
        """Starts the first fetch in the background (the API calls this at start-up)."""
        with self._lock:
            self._start_refresh_locked()

    def signing_key(self, kid: str) -> PyJWK:
        """The key for `kid`, or UnknownKey / KeysUnavailable. Never waits longer than the fetch
        timeout, and waits at all only when no usable set is held or for an unknown kid's refresh
        that this very call started."""
        waited = False
        in_flight: threading.Event | None
        while True:
            with self._lock:
                now = self._clock()
                usable = self._usable_locked(now)
                if usable:
                    key = self._keys.get(kid)
                    if self._age_locked(now) >= self.policy.refresh_s:
                        self._start_refresh_after_cooldown_locked(now)
                    if key is not None:
                        return key
                    if waited or not self._may_refresh_for_unknown_kid_locked(now):
                        raise UnknownKey(kid)
                    in_flight = self._start_refresh_locked()
                else:
                    if waited:
                        raise KeysUnavailable("no usable JWKS key set")
                    in_flight = self._in_flight or self._start_refresh_after_cooldown_locked(now)
                    if in_flight is None:
                        raise KeysUnavailable("the JWKS endpoint failed recently")
            in_flight.wait(self.policy.timeout_s)
            waited = True

    # ---- under the lock ------------------------------------------------------------------------

    def _age_locked(self, now: float) -> float:
        return float("inf") if self._fetched_at is None else now - self._fetched_at

    def _usable_locked(self, now: float) -> bool:
        return bool(self._keys) and self._age_locked(now) <= self.policy.max_stale_s

    def _may_refresh_for_unknown_kid_locked(self, now: float) -> bool:
        if self._in_flight is not None:
            return False  # a fetch is under way; its result decides the next request
        return (
            self._last_attempt is None
            or now - self._last_attempt >= self.policy.unknown_kid_cooldown_s
        )

    def _start_refresh_after_cooldown_locked(self, now: float) -> threading.Event | None:
        recently_failed = (
            self._last_failed
            and self._last_attempt is not None
            and now - self._last_attempt < self.policy.unknown_kid_cooldown_s
        )
        return None if recently_failed else self._start_refresh_locked()

    def _start_refresh_locked(self) -> threading.Event:
        """At most one fetch in flight: returns the one under way or a new one."""
        if self._in_flight is not None:
            return self._in_flight
        done = threading.Event()
        self._in_flight = done
        self._last_attempt = self._clock()
        threading.Thread(
            target=self._refresh, args=(done,), name="jwks-refresh", daemon=True
        ).start()
        return done

    # ---- the background fetch ------------------------------------------------------------------

    def _refresh(self, done: threading.Event) -> None:
        keys: dict[str, PyJWK] | None = None
        try:
            self.fetches += 1
            keys = {str(key.key_id): key for key in self._fetch() if key.key_id}
        except (PyJWKClientError, PyJWKSetError, PyJWKError, OSError, ValueError) as exc:
            log.warning(
                "JWKS fetch failed; serving the last good key set while it lasts",
                extra={"evt": "jwks_fetch_failed", "error": str(exc)[:200]},
            )
        finally:
            with self._lock:
                if keys:
                    self._keys, self._fetched_at = keys, self._clock()
                self._last_failed = not keys
                self._in_flight = None
            done.set()
