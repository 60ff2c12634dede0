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

Each decision is a hash of (seed, what, whose, sequence number), not a draw from a shared
random generator, so the n-th request to a machine or the n-th run on it meets the same
fault in every run with the same seed, whatever the thread interleaving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


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


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw)


def _parse_value(key: str, raw: Any) -> Any:
    if key == "seed":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise FaultsError(f"faults.seed: {raw!r} is not accepted; expected a whole number")
        return raw
    if key in _RATES:
        value = _number(raw)
        if value is None or not 0 <= value <= 1:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected a rate from 0 to 1")
        return value
    if key in _RANGES:
        if not isinstance(raw, list) or len(raw) != 2:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected [low, high]")
        low, high = (_number(v) for v in raw)
        if low is None or high is None or low < 0 or high < low:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected [low, high] with 0 <= low <= high")
        if key == "retry_after_seconds":
            if low < 1 or low != int(low) or high != int(high):
                raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected whole seconds >= 1")
            return (int(low), int(high))
        return (low, high)
    if key == "agent_flap_window_minutes":
        value = _number(raw)
        if value is None or value <= 0:
            raise FaultsError(f"faults.{key}: {raw!r} is not accepted; expected minutes > 0")
        return value
    known = ", ".join(["preset", *(f.name for f in fields(Faults) if f.name != "name")])
    raise FaultsError(f"faults: unknown key {key!r} (known: {known})")


def faults_from_mapping(spec: Mapping[str, Any], name: str = "custom") -> Faults:
    preset_name = spec.get("preset", "none")
    if preset_name not in PRESETS:
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FaultsError(f"--faults {text!r}: expected none, chaos or a JSON file ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise FaultsError(f"faults file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise FaultsError(f"faults file {path}: expected a JSON object")
    return faults_from_mapping(data, name=path.name)
