"""Parsing the Run Command scripts' one-line JSON output.

Run Command keeps only the last 4 KB of output, and a script that was cut off or
failed half-way prints something else: anything that is not a complete result of
the expected script is rejected with an error that says what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


class ScriptOutputError(ValueError):
    """Malformed, partial or foreign script output; the message says what is wrong."""


def last_json_line(output: str | None, script: str) -> dict[str, Any]:
    """The last line of ``output`` that parses as a JSON object from ``script``."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    if not lines:
        raise ScriptOutputError(f"{script}: no output (expected one JSON line)")
    last = lines[-1]
    try:
        data = json.loads(last)
    except json.JSONDecodeError as exc:
        raise ScriptOutputError(f"{script}: last output line is not JSON ({exc.msg}): {last[:120]!r}") from None
    if not isinstance(data, dict):
        raise ScriptOutputError(f"{script}: output is JSON but not an object: {last[:120]!r}")
    if data.get("script") != script:
        raise ScriptOutputError(f"{script}: output belongs to script {data.get('script')!r}")
    if data.get("v") != 1:
        raise ScriptOutputError(f"{script}: unsupported output version {data.get('v')!r} (expected 1)")
    return data


def _require(data: dict[str, Any], key: str, kinds: tuple[type, ...], script: str, nullable: bool = False) -> Any:
    if key not in data:
        raise ScriptOutputError(f"{script}: output lacks '{key}'")
    value = data[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise ScriptOutputError(f"{script}: '{key}' must be {kinds[0].__name__}, got {value!r}")
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ScriptOutputError(f"{script}: '{key}' must be {names}{' or null' if nullable else ''}, got {value!r}")
    return value


@dataclass(frozen=True)
class Readiness:
    build: int
    ubr: int
    edition_id: str
    product_name: str
    installation_type: str
    vbs_status: int | None
    vbs_configured: int | None
    firmware: str
    secure_boot: bool
    licensing_override: int | None
    license_mutex: bool
    himds: str
    last_boot: str
    hotfixes: tuple[str, ...]
    # Why a restart is already pending (empty: none): ``arc_hotpatch`` (the one an apply_changes run asked
    # for), ``component_servicing``, ``windows_update``, ``file_rename`` (Windows' own signals).
    reboot_pending: tuple[str, ...] = ()
    # Which signal told the firmware type: GetFirmwareType, env:firmware_type, SecureBoot\State, or none.
    firmware_signal: str = ""

    @property
    def our_reboot_pending(self) -> bool:
        """An earlier run's restart has not happened yet: wait for it, never ask for another."""
        return "arc_hotpatch" in self.reboot_pending

    @property
    def vsm_running(self) -> bool:
        return self.vbs_status == 2

    @property
    def firmware_unknown(self) -> bool:
        """No signal told the firmware type: not a verdict on the hardware."""
        return self.firmware.strip().lower() in ("", "unknown")

    @property
    def uefi_secure_boot(self) -> bool:
        return self.firmware.upper() == "UEFI" and self.secure_boot

    @property
    def workaround_active(self) -> bool:
        return self.licensing_override == 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hotfixes"] = list(self.hotfixes)
        data["reboot_pending"] = list(self.reboot_pending)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Readiness:
        return cls(**{**data, "hotfixes": tuple(data.get("hotfixes") or ()),
                      "reboot_pending": tuple(data.get("reboot_pending") or ())})


def parse_readiness(output: str | None) -> Readiness:
    script = "readiness"
    data = last_json_line(output, script)
    hotfixes = _require(data, "hotfixes", (list,), script)
    if not all(isinstance(kb, str) for kb in hotfixes):
        raise ScriptOutputError(f"{script}: 'hotfixes' must be a list of KB ids")
    # ConvertTo-Json writes a one-element array as the element itself: accept a string too.
    pending = _require(data, "reboot_pending", (list, str), script, nullable=True)
    pending = [pending] if isinstance(pending, str) else (pending or [])
    if not all(isinstance(reason, str) for reason in pending):
        raise ScriptOutputError(f"{script}: 'reboot_pending' must be a list of reasons")
    return Readiness(
        build=_require(data, "build", (int,), script),
        ubr=_require(data, "ubr", (int,), script),
        edition_id=_require(data, "edition_id", (str,), script),
        product_name=_require(data, "product_name", (str,), script),
        installation_type=_require(data, "installation_type", (str,), script),
        vbs_status=_require(data, "vbs_status", (int,), script, nullable=True),
        vbs_configured=_require(data, "vbs_configured", (int,), script, nullable=True),
        firmware=_require(data, "firmware", (str,), script),
        secure_boot=_require(data, "secure_boot", (bool,), script),
        licensing_override=_require(data, "licensing_override", (int,), script, nullable=True),
        license_mutex=_require(data, "license_mutex", (bool,), script),
        himds=_require(data, "himds", (str,), script),
        last_boot=_require(data, "last_boot", (str,), script),
        hotfixes=tuple(hotfixes),
        reboot_pending=tuple(pending),
        firmware_signal=_optional_text(data, "firmware_signal", script),
    )


def _optional_text(data: dict[str, Any], key: str, script: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ScriptOutputError(f"{script}: '{key}' must be str, got {value!r}")
    return value


def parse_action_output(output: str | None, script: str) -> dict[str, Any]:
    """The result object of the script that changes the machine (apply_changes)."""
    data = last_json_line(output, script)
    required = {"apply_changes": ("reboot_in_s", "requested_at")}.get(script, ())
    for key in required:
        if key not in data:
            raise ScriptOutputError(f"{script}: output lacks '{key}'")
    return data
