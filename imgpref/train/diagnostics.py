"""Watches over a DPO run's metrics: the both-down pathology (DESIGN.md section 4).

When the winners' policy error climbs above their reference error on average (Δ_w > 0), DPO is
lowering the loss by pushing the losers' error up faster than the winners' (both sides get worse),
the known path to degraded images. The monitor averages Δ_w over a trailing window of steps, flags
every logged step where that average is positive, and produces a warning at most once per
``repeat`` steps so the log stays readable.
"""

from __future__ import annotations

from collections import deque

ADVICE = "consider a larger dpo.beta, a lower optim.lr, dpo.loser_weight < 1 or dpo.sft_weight > 0"


class WinnerErrorMonitor:
    """Trailing mean of Δ_w over ``window`` steps; a warning when it is positive."""

    def __init__(self, window: int = 20, repeat: int = 200) -> None:
        self.window, self.repeat = window, repeat
        self._points: deque[tuple[int, float]] = deque()
        self._last_warning: int | None = None

    def update(self, step: int, delta_w: float) -> tuple[bool, str | None]:
        """Add the mean Δ_w logged at ``step``; return (flag, warning or None)."""
        self._points.append((step, delta_w))
        while self._points and self._points[0][0] <= step - self.window:
            self._points.popleft()
        mean = sum(v for _, v in self._points) / len(self._points)
        flag = mean > 0 and step >= self.window
        if not flag or (self._last_warning is not None and step - self._last_warning < self.repeat):
            return flag, None
        self._last_warning = step
        return flag, (
            f"warning (step {step}): the winners' policy error is above their reference error on average "
            f"(Δ_w = {mean:.3g} > 0 over the last {self.window} steps): the both-down pathology; {ADVICE}"
        )
