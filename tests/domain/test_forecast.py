"""The next-update forecast: the Hotpatch calendar and what the workflow read (no extra ARM request)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from core.facts import MachineFacts
from core.forecast import forecast, next_update_day, second_tuesday
from core.readiness import Readiness

MACHINE_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/srv"
ENROLLED = MachineFacts(
    id=MACHINE_ID, name="srv", subscription_id="s", resource_group="rg", status="Connected", os_type="windows",
    os_sku="Windows Server 2025 Datacenter", os_version_text="10.0.26100.32230", hotpatch_feature_status="Enabled",
    hotpatch_enablement_status="Enabled",
)
SOUND = Readiness(
    build=26100, ubr=32230, edition_id="ServerDatacenter", product_name="Windows Server 2025 Datacenter",
    installation_type="Server", vbs_status=2, vbs_configured=1, firmware="UEFI", secure_boot=True,
    licensing_override=1, license_mutex=False, himds="Running", last_boot="2026-02-01T04:00:00Z", hotfixes=(),
)
FEBRUARY = datetime(2026, 2, 2, 8, tzinfo=UTC)  # next update 2026-02-10: a hotpatch month
ON = ("on", "on the latest baseline 26100.32230 (KB5073379, 2026-01-13)")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 1, 5, 8, tzinfo=UTC), date(2026, 1, 13)),
        (datetime(2026, 1, 13, 8, tzinfo=UTC), date(2026, 2, 10)),  # on Patch Tuesday: the next one
        (datetime(2026, 12, 2, 8, tzinfo=UTC), date(2026, 12, 8)),
        (datetime(2026, 12, 9, 8, tzinfo=UTC), date(2027, 1, 12)),
    ],
)
def test_the_next_update_is_the_next_second_tuesday(now: datetime, expected: date) -> None:
    assert next_update_day(now) == expected
    assert second_tuesday(expected.year, expected.month) == expected and expected.weekday() == 1


def test_an_enrolled_machine_on_the_baseline_gets_a_hotpatch_in_a_hotpatch_month() -> None:
    outlook = forecast(FEBRUARY, ENROLLED, SOUND, *ON, licensing_issue=True)
    assert (outlook.next_update, outlook.detail) == (
        "hotpatch", "2026-02-10 update: a hotpatch (on the latest baseline 26100.32230 (KB5073379, 2026-01-13))")


@pytest.mark.parametrize(
    ("now", "facts", "readiness", "baseline", "assessed", "why"),
    [
        (datetime(2026, 3, 20, tzinfo=UTC), ENROLLED, SOUND, ON, None, "April brings a baseline (a planned reboot)"),
        (FEBRUARY, ENROLLED, SOUND, ("off", "26100.6899 is not the latest baseline"), None,
         "off the hotpatch path: 26100.6899 is not the latest baseline"),
        (FEBRUARY, ENROLLED, SOUND, ("off", "KB5070881 on 26100.6905: out-of-band"), None, "KB5070881"),
        (FEBRUARY, replace(ENROLLED, hotpatch_feature_status="Disabled"), SOUND, ON, None,
         "the Hotpatch license is Disabled, not Enabled"),
        (FEBRUARY, replace(ENROLLED, hotpatch_enablement_status="ActionRequired"), SOUND, ON, None,
         "hotpatchEnablementStatus is ActionRequired"),
        (FEBRUARY, ENROLLED, replace(SOUND, licensing_override=None), ON, None,
         "the October 2025 feature licensing issue can expire the license"),
        (FEBRUARY, ENROLLED, replace(SOUND, reboot_pending=("component_servicing",)), ON, None,
         "a reboot is pending (component_servicing)"),
        (FEBRUARY, ENROLLED, SOUND, ON, True, "Update Manager's patch assessment reports a reboot pending"),
    ],
    ids=["baseline-month", "off-baseline", "off-path-update", "license-not-enabled", "action-required",
         "licensing-issue", "reboot-pending", "assessment"],
)
def test_a_machine_reboots_at_the_next_update_and_the_detail_says_why(now, facts, readiness, baseline, assessed,
                                                                       why) -> None:
    outlook = forecast(now, facts, readiness, *baseline, licensing_issue=True, assessed_reboot_pending=assessed)
    assert outlook.next_update == "reboot" and why in outlook.detail


@pytest.mark.parametrize(
    ("facts", "readiness", "baseline", "why"),
    [
        (None, None, ON, "not read"),
        (replace(ENROLLED, os_sku="Windows Server 2022 Datacenter", os_version_text="10.0.20348.4294"), None, ON,
         "Hotpatch does not apply"),
        (replace(ENROLLED, os_sku="Windows Server 2025 Datacenter: Azure Edition"), SOUND, ON, "Azure Edition"),
        (ENROLLED, SOUND, ("unknown", "26100.40000 is newer than every known baseline"), "newer than every known"),
        (ENROLLED, None, ON, "pending-reboot signals were not read"),
    ],
    ids=["not-read", "not-2025", "azure-edition", "unknown-build", "no-signals"],
)
def test_a_machine_whose_next_update_cannot_be_told_is_unknown_with_why(facts, readiness, baseline, why) -> None:
    outlook = forecast(FEBRUARY, facts, readiness, *baseline, licensing_issue=False)
    assert outlook.next_update == "unknown" and why in outlook.detail
