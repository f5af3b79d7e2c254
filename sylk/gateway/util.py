"""Small Twisted helpers."""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_UNSET = object()


class OneShotObserver:
    """Lets any number of callers wait for one outcome (a Deferred must not be handed to several waiters)."""

    def __init__(self) -> None:
        self._result: Any = _UNSET
        self._waiters: list[Deferred[Any]] = []

    def when_fired(self) -> Deferred[Any]:
        if self._result is not _UNSET:
            return succeed(self._result)
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def fire(self, result: Any = None) -> None:
        if self._result is not _UNSET:
            return
        self._result = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result)


class Timer:
    """At most one pending delayed call: start() replaces it, cancel() drops it, and it knows whether it runs.

    What the call raises is logged with its traceback and reported to `on_error` (which ends what the timer
    belongs to, say a call), instead of going to the reactor and leaving its owner half-done."""

    log = Logger()

    def __init__(self, clock: IReactorTime, on_error: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_error = on_error
        self._call: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        return self._call is not None and self._call.active()

    def start(self, delay: float, function: Callable[..., Any], *args: Any) -> None:
        self.cancel()
        self._call = self._clock.callLater(delay, self._fire, function, args)

    def _fire(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            function(*args)
        except Exception:
            self.log.failure("A timer's work ({function!r}) failed", function=function)
            if self._on_error is not None:
                self._on_error()

    def cancel(self) -> None:
        if self.running:
            self._call.cancel()  # type: ignore[union-attr]
        self._call = None
