"""Cuts streamed text at stop strings without ever leaking part of one."""


class StopMatcher:
    """Feeds text deltas; releases text only once it cannot be the start of a stop string."""

    def __init__(self, stops: list[str]):
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was reached)."""
        self._pending += text
        if not self._stops:
            out, self._pending = self._pending, ""
            return out, False
        hits = [i for s in self._stops if (i := self._pending.find(s)) >= 0]
        if hits:
            out = self._pending[: min(hits)]
            self._pending = ""
            return out, True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self._pending)), hold, -1):
                if self._pending.endswith(stop[:k]):
                    hold = k
                    break
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        """Returns the held-back text at the end of generation (no stop string followed)."""
        out, self._pending = self._pending, ""
        return out
