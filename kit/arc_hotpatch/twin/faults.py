"""Injected faults (``--faults none|chaos|FILE``), reproducible from the seed.

A faults file is a JSON object; every key is optional (default: no fault of that kind)::

    {
      "preset": "chaos",                   # start from a preset ("none" or "chaos"), then override
      "seed": 7,                           # default: the fleet's seed
      "arm_throttle_rate": 0.03,           # share of ARM requests answered 429 (with Retry-After)
      "arm_server_error_rate": 0.02,       # share answered 500 or 503 (with Retry-After)
      "retry_after_seconds": [1, 10],      # Retry-After range of injected 429/5xx (whole seconds)
      "lost_run_result_rate": 0.05,        # share of Run Command runs whose result never arrives
      "slow_reboot_rate": 0.15,            # share of reboots that take longer ...
      "slow_reboot_extra_minutes": [5, 20],  # ... by this many extra minutes
      "agent_flap_rate": 0.05,             # share of connected machines whose agent drops once ...
      "agent_flap_minutes": [2, 8],        # ... for this long ...
      "agent_flap_window_minutes": 120     # ... starting at a time within this window after twin start
    }

Durations are bounded so the twin's clock arithmetic cannot overflow: minutes at most a week (MAX_MINUTES),
Retry-After at most an hour; NaN and Infinity (which Python's JSON parser reads) are refused.

Each decision is a hash of (seed, what, whose, sequence number), not a draw from a shared
random generator, so the n-th request to a machine or the n-th run on it meets the same
fault in every run with the same seed, whatever the thread interleaving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..jsonfiles import JsonFileError, read_json
from .fleet import MAX_MINUTES


class FaultsError(ValueError):
    """An invalid faults specification; the message names the key and what is accepted."""


@dataclass(frozen=True)
class Faults:
    """Fault rates and ranges; all zero means a faithful, fault-free twin."""

    name: str = "none"
    seed: int | None = None
    arm_throttle_rate: float = 0.0
    arm_server_error_rate: float = 0.0
    retry_after_seconds: tuple[int, int] = (1, 10)
    lost_run_result_rate: float = 0.0
    slow_reboot_rate: float = 0.0
    slow_reboot_extra_minutes: tuple[float, float] = (5.0, 20.0)
    agent_flap_rate: float = 0.0
    agent_flap_minutes: tuple[float, float] = (2.0, 8.0)
    agent_flap_window_minutes: float = 120.0

    @property
    def injects_http_faults(self) -> bool:
        return self.arm_throttle_rate > 0 or self.arm_server_error_rate > 0


NO_FAULTS = Faults()
CHAOS = Faults(
    name="chaos",
    arm_throttle_rate=0.03,
    arm_server_error_rate=0.02,
    lost_run_result_rate=0.05,
    slow_reboot_rate=0.15,
    agent_flap_rate=0.05,
)
PRESETS: dict[str, Faults] = {"none": NO_FAULTS, "chaos": CHAOS}

_RATES = ("arm_throttle_rate", "arm_server_error_rate", "lost_run_result_rate", "slow_reboot_rate", "agent_flap_rate")
_RANGES = ("retry_after_seconds", "slow_reboot_extra_minutes", "agent_flap_minutes")
MAX_RETRY_AFTER_S = 3600  # an hour; ARM's own Retry-After values are seconds to minutes


def _number(raw: Any, high: float) -> float | None:
    """``raw`` if it is a number from 0 to ``high``, else None: not a boolean, NaN or Infinity (which Python's
    JSON parser reads), nor so large that the twin's timedeltas overflow."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw <= high:
        return None
    return float(raw)


def _parse_value(key: str, raw: Any) -> Any:
    if key == "seed":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise FaultsError(f"faults.seed: {raw!r} is not accepted; expected a whole number")
        return raw
    if key in _RATES:
        value = _number(raw, 1)
        if value is None:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected a rate from 0 to 1")
        return value
    if key in _RANGES:
        bound, unit = (MAX_RETRY_AFTER_S, "seconds") if key == "retry_after_seconds" else (MAX_MINUTES, "minutes")
        if not isinstance(raw, list) or len(raw) != 2:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected [low, high]")
        low, high = (_number(v, bound) for v in raw)
        if low is None or high is None or high < low:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; "
                              f"expected [low, high] {unit} with 0 <= low <= high <= {bound}")
        if key == "retry_after_seconds":
            if low < 1 or low != int(low) or high != int(high):
                raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected whole seconds >= 1")
            return (int(low), int(high))
        return (low, high)
    if key == "agent_flap_window_minutes":
        value = _number(raw, MAX_MINUTES)
        if value is None or value <= 0:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected minutes > 0 and <= {MAX_MINUTES}")
        return value
    known = ", ".join(["preset", *(f.name for f in fields(Faults) if f.name != "name")])
    raise FaultsError(f"faults: unknown key {key!r} (known: {known})")


def faults_from_mapping(spec: Mapping[str, Any], name: str = "custom") -> Faults:
    preset_name = spec.get("preset", "none")
    if not isinstance(preset_name, str) or preset_name not in PRESETS:  # a list or object is not hashable
        raise FaultsError(f"faults.preset: {preset_name!r} is not accepted; expected one of {', '.join(PRESETS)}")
    changes = {key: _parse_value(key, raw) for key, raw in spec.items() if key != "preset"}
    return replace(PRESETS[preset_name], name=name, **changes)


def load_faults(spec: str | Path | Mapping[str, Any] | Faults | None) -> Faults:
    """``none`` / ``chaos`` / a JSON file path / a mapping / a ``Faults`` → ``Faults``."""
    if spec is None:
        return NO_FAULTS
    if isinstance(spec, Faults):
        return spec
    if isinstance(spec, Mapping):
        return faults_from_mapping(spec)
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    try:
        data = read_json(path)
    except OSError as exc:
        raise FaultsError(f"--faults {text!r}: expected none, chaos or a JSON file ({exc.strerror or exc})") from None
    except JsonFileError as exc:
        raise FaultsError(f"faults file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise FaultsError(f"faults file {path}: expected a JSON object")
    return faults_from_mapping(data, name=path.name)
