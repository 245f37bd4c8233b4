"""Time-decayed sums by *forward decay* (Cormode, Shkapenyuk, Srivastava, Xu, ICDE 2009).

A contribution ``w`` made at time ``t`` is worth ``w * 2**(-(now - t) / half_life)``
at time ``now``. Rather than decaying every stored sum whenever time moves,
each entity keeps a *landmark* time ``L`` and stores *masses*
``sum(w * 2**((t - L) / half_life))``: adding a contribution is one multiply
and one add, old or new, in any order; a mass is turned into a value with
:func:`value_at`. Sums that share a landmark keep their ratios, so ranking
by mass is ranking by decayed value.

Masses grow by a factor of two per half-life past the landmark; when an event
is more than :data:`RESCALE_AFTER` half-lives past it, the owner moves the
landmark forward with :func:`rescale` (a deterministic step, so a replay does
exactly the same).

Every factor is computed with its exponent capped (:data:`MAX_EXPONENT`), so
no timestamp, however wrong, raises ``OverflowError``; far-past contributions
underflow to 0, which is what they are worth. Timestamps far in the future
are refused at the door (``ingest`` accepts at most a few minutes of clock
skew), because a contribution stamped ahead outweighs everything stamped now.
"""

from __future__ import annotations

import math
from typing import Final

DEFAULT_HALF_LIFE_S: Final = 7 * 24 * 3600.0
RESCALE_AFTER: Final = 64  # half-lives; 2**64 is far from float overflow
#: The largest exponent of two a factor may have (float64 overflows past 1023).
MAX_EXPONENT: Final = 1000.0


def growth(ts: float, landmark: float, half_life: float = DEFAULT_HALF_LIFE_S) -> float:
    """The factor that turns a weight at ``ts`` into mass relative to ``landmark``."""
    return math.exp2(min((ts - landmark) / half_life, MAX_EXPONENT))


def value_at(
    mass: float, landmark: float, ts: float, half_life: float = DEFAULT_HALF_LIFE_S
) -> float:
    """The decayed value, as of ``ts``, of a mass kept against ``landmark``.

    Finite for a finite mass: a large mass read long before its landmark, whose
    value would pass float's range, is capped at ``2**MAX_EXPONENT`` (with its sign).
    """
    value = mass * math.exp2(min((landmark - ts) / half_life, MAX_EXPONENT))
    if math.isinf(value) and math.isfinite(mass):
        return math.copysign(math.exp2(MAX_EXPONENT), mass)
    return value


def needs_rescale(ts: float, landmark: float, half_life: float = DEFAULT_HALF_LIFE_S) -> bool:
    return ts - landmark > RESCALE_AFTER * half_life


def rescale(
    masses: dict[str, float],
    landmark: float,
    new_landmark: float,
    half_life: float = DEFAULT_HALF_LIFE_S,
) -> None:
    """Re-express ``masses`` (in place) against ``new_landmark``."""
    factor = math.exp2(min((landmark - new_landmark) / half_life, MAX_EXPONENT))
    for key in masses:
        masses[key] *= factor
