"""Rollout plans: strategy validation and wave membership (pure, no I/O).

Waves are cumulative sizes, counts ("1", "5") or percentages ("10%") of the targeted
hosts; the first wave is the canary. Membership is fixed by a seed: the hosts sorted
by name, shuffled with `random.Random(seed)`, then cut at the cumulative sizes. The same
hosts and seed always give the same plan, so a dry run shows exactly what will happen.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from backendai.errors import InvalidArgument

DEFAULT_WAVES = ("1", "10%", "50%", "100%")
MAX_WAVES = 100
MAX_HOSTS = 100_000
DEFAULT_HEALTHY_DEADLINE = 60.0
DEFAULT_STEP_DEADLINE = 600.0
MAX_SECONDS = 7 * 24 * 3600.0
HUB_WAVE_SPEC = "hub"

_COUNT = re.compile(r"^[0-9]{1,6}$")
_PERCENT = re.compile(r"^([0-9]{1,3}(?:\.[0-9]{1,3})?)%$")


@dataclass(frozen=True, slots=True)
class Strategy:
    """A validated strategy with every default filled in."""

    waves: tuple[str, ...] = DEFAULT_WAVES
    max_parallel: int = 0                 # 0: the whole wave at once
    min_healthy_seconds: float = 0.0
    healthy_deadline_seconds: float = DEFAULT_HEALTHY_DEADLINE
    step_deadline_seconds: float = DEFAULT_STEP_DEADLINE
    max_failures_per_wave: str = "0"
    max_failures_total: str = "0"
    pause_seconds: float = 0.0
    pause_until_promote: bool = False
    auto_rollback: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    seed: int
    specs: tuple[str, ...]                       # spec of each wave ("hub" first if any)
    waves: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for wave in self.waves for h in wave)


def _spec_ok(spec: str, what: str, *, allow_zero: bool) -> str:
    if not isinstance(spec, str):
        raise InvalidArgument(f"{what}: expected a count or a percentage, got {spec!r}")
    text = spec.strip()
    if _COUNT.match(text):
        if int(text) == 0 and not allow_zero:
            raise InvalidArgument(f"{what}: a wave needs at least 1 host, got {spec!r}")
        return str(int(text))
    m = _PERCENT.match(text)
    if m:
        pct = float(m.group(1))
        if pct > 100 or (pct == 0 and not allow_zero):
            raise InvalidArgument(f"{what}: percentage must be in (0, 100], got {spec!r}")
        return text
    raise InvalidArgument(f"{what}: expected a count like \"5\" or a percentage like "
                          f"\"10%\", got {spec[:40]!r}")


def _seconds(value: float, what: str, default: float) -> float:
    if not math.isfinite(value) or value < 0 or value > MAX_SECONDS:
        raise InvalidArgument(f"{what}: must be between 0 and {MAX_SECONDS:.0f} seconds, "
                              f"got {value!r}")
    return value or default


def make_strategy(*, waves: list[str] | tuple[str, ...] = (), max_parallel: int = 0,
                  min_healthy_seconds: float = 0.0, healthy_deadline_seconds: float = 0.0,
                  step_deadline_seconds: float = 0.0, max_failures_per_wave: str = "",
                  max_failures_total: str = "", pause_seconds: float = 0.0,
                  pause_until_promote: bool = False, auto_rollback: bool = True) -> Strategy:
    """Validate request values (0/empty meaning "default") into a Strategy."""
    if len(waves) > MAX_WAVES:
        raise InvalidArgument(f"strategy.waves: at most {MAX_WAVES} waves, got {len(waves)}")
    specs = tuple(_spec_ok(w, f"strategy.waves[{i}]", allow_zero=False)
                  for i, w in enumerate(waves)) or DEFAULT_WAVES
    if not 0 <= max_parallel <= MAX_HOSTS:
        raise InvalidArgument(f"strategy.max_parallel: must be 0-{MAX_HOSTS}, got {max_parallel}")
    return Strategy(
        waves=specs, max_parallel=max_parallel,
        min_healthy_seconds=_seconds(min_healthy_seconds, "strategy.min_healthy_seconds", 0.0),
        healthy_deadline_seconds=_seconds(healthy_deadline_seconds,
                                          "strategy.healthy_deadline_seconds",
                                          DEFAULT_HEALTHY_DEADLINE),
        step_deadline_seconds=_seconds(step_deadline_seconds, "strategy.step_deadline_seconds",
                                       DEFAULT_STEP_DEADLINE),
        max_failures_per_wave=_spec_ok(max_failures_per_wave or "0",
                                       "strategy.max_failures_per_wave", allow_zero=True),
        max_failures_total=_spec_ok(max_failures_total or "0",
                                    "strategy.max_failures_total", allow_zero=True),
        pause_seconds=_seconds(pause_seconds, "strategy.pause_seconds", 0.0),
        pause_until_promote=pause_until_promote, auto_rollback=auto_rollback)


def resolve(spec: str, total: int) -> int:
    """A count or percentage of `total`: counts are capped at total; percentages round
    up (a wave of "10%" of 5 hosts is 1 host, never 0)."""
    if spec.endswith("%"):
        return min(total, math.ceil(total * float(spec[:-1]) / 100 - 1e-9))
    return min(total, int(spec))


def budget(spec: str, total: int) -> int:
    """Failures tolerated: a count, or a percentage of `total` rounded down."""
    if spec.endswith("%"):
        return math.floor(total * float(spec[:-1]) / 100 + 1e-9)
    return int(spec)


def plan_waves(hosts: list[str] | tuple[str, ...], strategy: Strategy, seed: int,
               *, hub: str | None = None) -> Plan:
    """Cut the targeted hosts into waves. `hub`: the hub's own host, updated first in a
    wave of its own (the seeds' order), never part of the agent waves."""
    names = sorted(set(hosts) - ({hub} if hub else set()))
    if len(names) > MAX_HOSTS:
        raise InvalidArgument(f"target: at most {MAX_HOSTS} hosts, got {len(names)}")
    random.Random(seed).shuffle(names)  # noqa: S311 - wave order, not a secret
    waves: list[tuple[str, ...]] = []
    specs: list[str] = []
    if hub:
        waves.append((hub,))
        specs.append(HUB_WAVE_SPEC)
    done = 0
    for i, spec in enumerate(strategy.waves):
        last = i == len(strategy.waves) - 1
        upto = len(names) if last else resolve(spec, len(names))
        if upto > done:
            waves.append(tuple(names[done:upto]))
            specs.append(spec)
            done = upto
    return Plan(seed=seed, specs=tuple(specs), waves=tuple(waves))
