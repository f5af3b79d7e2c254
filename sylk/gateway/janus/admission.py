"""StackAdmission: who may start a Sofia stack in one Janus, and when.

Starting an account's SIP stack costs the SIP plugin's single request thread ~100 ms, so one Janus starts at most
~10 a second, and each live stack holds ~8 of Janus's file descriptors, which it must never run out of (it aborts,
losing every session). So, per Janus:

- at most `at_once` starts are in flight; the rest wait here, not inside Janus where their request timeouts would
  run out;
- the waiting take turns round-robin by client (a browser's address, or its connection): a client with hundreds
  of queued starts gets one turn in each round, like everyone else, so it cannot starve the others;
- no more stacks than the budget are alive or starting at once: beyond it a start is refused at once with
  `GatewayFull`, well before Janus would run out of descriptors.

    reserve(client) --a turn--> (start the stack) --started(holder, ok)--> alive --ended(holder)--> gone
    reserve(client) --budget spent--> GatewayFull      a waiter cancelled or timed out gives its place up
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Hashable

from twisted.internet.defer import Deferred, fail, succeed

from sylk.gateway.errors import APIError


# Accounts (SIP stacks) one Janus may hold when its open-files limit is not known (an external Janus).
DEFAULT_ACCOUNT_BUDGET = 2000


class GatewayFull(APIError):
    """The Janus has as many SIP stacks as its budget allows."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"503 The gateway is full ({budget} SIP accounts); try again later")


class StackAdmission:
    def __init__(self, at_once: int, budget: int) -> None:
        self.at_once = at_once
        self.budget = budget
        self._starting = 0
        self._alive: set[object] = set()
        self._waiting: OrderedDict[Hashable, deque[Deferred[None]]] = OrderedDict()  # by client, in turn order

    @property
    def in_use(self) -> int:
        """Stacks alive, starting, or waiting to start."""
        return sum(self.levels)

    @property
    def levels(self) -> tuple[int, int, int]:
        """Stacks alive, starting, and waiting for their turn to start."""
        return len(self._alive), self._starting, sum(len(queue) for queue in self._waiting.values())

    @property
    def full(self) -> bool:
        return self.in_use >= self.budget

    def reserve(self, client: Hashable) -> Deferred[None]:
        """Fires when `client` may start a stack (then call started() exactly once); fails with GatewayFull when the
        budget is spent. Cancelling the Deferred gives the place in the queue up."""
        if self.full:
            return fail(GatewayFull(self.budget))
        if self._starting < self.at_once and not self._waiting:
            self._starting += 1
            return succeed(None)
        waiter: Deferred[None] = Deferred(lambda d: self._give_up(client, d))
        self._waiting.setdefault(client, deque()).append(waiter)
        return waiter

    def started(self, holder: object, ok: bool) -> None:
        """A start that had its turn is over: `ok` if the stack now exists (it counts until ended(holder))."""
        self._starting -= 1
        if ok:
            self._alive.add(holder)
        self._next()

    def ended(self, holder: object) -> None:
        """`holder`'s stack is gone (released, or lost with its Janus session); no-op if it had none."""
        self._alive.discard(holder)

    def _next(self) -> None:
        while self._starting < self.at_once and self._waiting:
            client, queue = next(iter(self._waiting.items()))
            waiter = queue.popleft()
            del self._waiting[client]
            if queue:
                self._waiting[client] = queue  # to the back of the round
            self._starting += 1
            waiter.callback(None)

    def _give_up(self, client: Hashable, waiter: Deferred[None]) -> None:
        queue = self._waiting.get(client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[client]
