"""A per-session allowance of heavy work (no streamlit here)."""
from __future__ import annotations


class Allowance:
    """Heavy work a visitor may start per time window (FLOPs in the last ``window`` seconds): a shared
    server stays usable when one visitor asks for the exact reference at N = 65,536 again and again."""

    def __init__(self, flops: float, window: float = 600.0):
        self.flops, self.window = float(flops), float(window)
        self._spent: list[tuple[float, float]] = []  # (time, flops)

    def left(self, now: float) -> float:
        self._spent = [(t, f) for t, f in self._spent if now - t < self.window]
        return self.flops - sum(f for _, f in self._spent)

    def take(self, flops: float, now: float) -> str | None:
        """Record ``flops`` if they fit; else a sentence saying why not (nothing is recorded)."""
        left = self.left(now)
        if flops > left:
            wait = min((self.window - (now - t) for t, _ in self._spent), default=0.0)
            return (f"this session has used its allowance of heavy work ({self.flops:.3g} FLOPs per "
                    f"{self.window / 60:.0f} minutes; {max(left, 0):.3g} left); try again in {wait:.0f} s "
                    f"or use a shorter input.")
        self._spent.append((now, float(flops)))
        return None
