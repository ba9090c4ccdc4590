"""Which node to try next, and how long to wait when none answers.

Both are pure (no I/O), shared by the blocking clients and the asynchronous traffic engine:

- ``NodeRotation`` keeps the failover order. ``current`` is the node to try (or stay on);
  ``advance()`` moves to the next one after a failure, wrapping around. After a sweep over
  every node fails, the caller waits ``backoff_delay(...)`` before the next sweep.
- ``backoff_delay`` is exponential with equal jitter, so clients that lost the same node do
  not come back in lockstep, and a node that is back is found within ``maximum`` seconds.
- ``Backoff`` counts failed sweeps and gives the next delay; ``reset()`` after a success.
"""

import random


class NodeRotation:
    """Round-robin over ``nodes`` (a non-empty list, kept in its order)."""

    def __init__(self, nodes, start=0):
        self.nodes = list(nodes)
        if not self.nodes:
            raise ValueError("NodeRotation needs at least one node")
        self.index = start % len(self.nodes)

    def __len__(self):
        return len(self.nodes)

    @property
    def current(self):
        return self.nodes[self.index]

    def advance(self):
        """Move to the next node (wrapping) and return it."""
        self.index = (self.index + 1) % len(self.nodes)
        return self.current

    def sweep(self):
        """Every node once, starting with ``current``: the order of one connection sweep."""
        return [self.nodes[(self.index + i) % len(self.nodes)] for i in range(len(self.nodes))]

    def select(self, node):
        """Make ``node`` current (after connecting to it in a sweep)."""
        self.index = self.nodes.index(node)

    def next_after(self, node):
        """The node after ``node`` in the order (``node`` itself when it is the only one)."""
        return self.nodes[(self.nodes.index(node) + 1) % len(self.nodes)]


def backoff_delay(attempt, initial, maximum, rand=random.random):
    """Seconds to wait after ``attempt`` consecutive failed sweeps (attempt >= 1).

    With d = min(maximum, initial * 2**(attempt - 1)) the delay is uniform in [d/2, d]:
    never above ``maximum``, never 0, doubling until it reaches the cap.
    """
    attempt = max(1, int(attempt))
    ceiling = min(float(maximum), float(initial) * (2.0 ** min(attempt - 1, 62)))
    return ceiling / 2.0 + rand() * ceiling / 2.0


class Backoff:
    """Consecutive failures and the delay they earn (``backoff_delay``)."""

    def __init__(self, initial, maximum, rand=random.random):
        self.initial, self.maximum, self.rand = initial, maximum, rand
        self.failures = 0

    def failure(self):
        """Count one more failed sweep; returns the seconds to wait before the next one."""
        self.failures += 1
        return backoff_delay(self.failures, self.initial, self.maximum, self.rand)

    def reset(self):
        self.failures = 0
