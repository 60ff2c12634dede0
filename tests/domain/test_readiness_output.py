"""The readiness parser accepts only a complete result of the readiness script."""

from __future__ import annotations

import json

import pytest

from core.readiness import ScriptOutputError, parse_action_output, parse_readiness

GOOD = {
    "v": 1, "script": "readiness", "request_id": "r1", "build": 26100, "ubr": 6899, "edition_id": "ServerDatacenter",
    "product_name": "Windows Server 2025 Datacenter", "installation_type": "Server Core", "vbs_status": 0,
    "vbs_configured": None, "firmware": "UEFI", "secure_boot": True, "licensing_override": None,
    "license_mutex": True, "himds": "Running", "last_boot": "2026-01-05T08:00:00Z", "hotfixes": ["KB5066835"],
    "reboot_pending": [],
}


def test_good_output_with_noise_before_the_last_line() -> None:
    readiness = parse_readiness("WARNING: something\r\n" + json.dumps(GOOD, separators=(",", ":")) + "\r\n")
    assert readiness.ubr == 6899 and not readiness.vsm_running and readiness.uefi_secure_boot
    assert readiness.hotfixes == ("KB5066835",)
    assert readiness.reboot_pending == () and not readiness.our_reboot_pending


@pytest.mark.parametrize(
    ("pending", "reasons", "ours"),
    [
        (["arc_hotpatch", "windows_update"], ("arc_hotpatch", "windows_update"), True),
        ("arc_hotpatch", ("arc_hotpatch",), True),  # ConvertTo-Json may unwrap a one-element array
        (["component_servicing"], ("component_servicing",), False),
        (None, (), False),
    ],
)
def test_a_pending_restart_is_read_with_its_reasons(pending: object, reasons: tuple[str, ...], ours: bool) -> None:
    readiness = parse_readiness(json.dumps({**GOOD, "reboot_pending": pending}))
    assert readiness.reboot_pending == reasons and readiness.our_reboot_pending is ours


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "no output"),
        (None, "no output"),
        (json.dumps(GOOD)[:-20], "not JSON"),
        ("[1,2]", "not an object"),
        (json.dumps({**GOOD, "script": "reboot"}), "belongs to script 'reboot'"),
        (json.dumps({**GOOD, "v": 2}), "unsupported output version"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "ubr"}), "lacks 'ubr'"),
        (json.dumps({**GOOD, "build": "26100"}), "'build' must be int"),
        (json.dumps({**GOOD, "secure_boot": "yes"}), "'secure_boot' must be bool"),
        (json.dumps({**GOOD, "vbs_status": True}), "'vbs_status' must be int"),
        (json.dumps({**GOOD, "hotfixes": [1]}), "list of KB ids"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "reboot_pending"}), "lacks 'reboot_pending'"),
        (json.dumps({**GOOD, "reboot_pending": [True]}), "list of reasons"),
    ],
)
def test_malformed_or_partial_output_is_rejected(output: str | None, message: str) -> None:
    with pytest.raises(ScriptOutputError, match=message):
        parse_readiness(output)


def test_action_output() -> None:
    out = '{"v":1,"script":"apply_changes","request_id":"x","reboot_in_s":60,"requested_at":"2026-01-05T08:00:00Z"}'
    assert parse_action_output(out, "apply_changes")["reboot_in_s"] == 60
    with pytest.raises(ScriptOutputError, match="lacks 'requested_at'"):
        parse_action_output('{"v":1,"script":"apply_changes","reboot_in_s":60}', "apply_changes")
