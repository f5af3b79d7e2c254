"""Small Twisted helpers."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

_UNSET = object()


class OneShotObserver:
    """Lets any number of callers wait for one outcome (a Deferred must not be handed to several waiters)."""

    def __init__(self) -> None:
        self._result: Any = _UNSET
        self._waiters: list[Deferred[Any]] = []

    @property
    def fired(self) -> bool:
        return self._result is not _UNSET

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
