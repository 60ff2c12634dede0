"""The two traps of license profile writes: PAYG billing and lost features / ESU."""

from __future__ import annotations

from core.facts import license_in_use, product_features
from core.licensing import merged_hotpatch_update, new_hotpatch_profile

CURRENT = {
    "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m/licenseProfiles/default",
    "location": "westeurope",
    "properties": {
        "esuProfile": {"assignedLicense": "/subscriptions/s/.../licenses/esu1", "esuEligibility": "Eligible"},
        "softwareAssurance": {"softwareAssuranceCustomer": True},
        "productProfile": {
            "subscriptionStatus": "Disabled",
            "productType": "WindowsServer",
            "productFeatures": [
                {"name": "WindowsServerAzureArcMgmt", "subscriptionStatus": "Enabled"},
                {"name": "Hotpatch", "subscriptionStatus": "Disabled"},
                {"name": "SomethingNew", "subscriptionStatus": "Unknown"},
            ],
        },
    },
}


def test_patch_keeps_every_other_feature_and_never_sets_top_level_status() -> None:
    body = merged_hotpatch_update(product_features(CURRENT["properties"]))
    product = body["properties"]["productProfile"]
    assert "subscriptionStatus" not in product
    assert product["productType"] == "WindowsServer"
    assert product["productFeatures"] == [
        {"name": "WindowsServerAzureArcMgmt", "subscriptionStatus": "Enable"},
        {"name": "Hotpatch", "subscriptionStatus": "Enable"},
        {"name": "SomethingNew"},
    ]
    # PATCH: the ESU profile and software assurance are not sent, so ARM keeps them untouched.
    assert set(body["properties"]) == {"productProfile"}


def test_patch_adds_hotpatch_when_missing() -> None:
    body = merged_hotpatch_update(product_features({"esuProfile": {"assignedLicense": "x"}}))
    features = body["properties"]["productProfile"]["productFeatures"]
    assert features == [{"name": "Hotpatch", "subscriptionStatus": "Enable"}]


def test_new_profile() -> None:
    body = new_hotpatch_profile("westeurope")
    assert body["location"] == "westeurope"
    assert "subscriptionStatus" not in body["properties"]["productProfile"]


def test_new_profile_asks_for_the_hotpatch_feature_of_windows_server() -> None:
    product = new_hotpatch_profile("westeurope")["properties"]["productProfile"]
    assert product == {"productType": "WindowsServer",
                       "productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "Enable"}]}


def test_a_hotpatch_feature_spelt_in_another_case_is_enabled_not_doubled() -> None:
    body = merged_hotpatch_update([{"name": "hotpatch", "subscriptionStatus": "Disabled"},
                                   {"name": "WindowsServerAzureArcMgmt", "subscriptionStatus": "Enabled"}])
    assert body["properties"]["productProfile"]["productFeatures"] == [
        {"name": "hotpatch", "subscriptionStatus": "Enable"},
        {"name": "WindowsServerAzureArcMgmt", "subscriptionStatus": "Enable"},
    ]


def test_a_profile_with_anything_to_keep_is_merged_never_replaced() -> None:
    assert license_in_use(CURRENT["properties"])
    assert license_in_use({"esuProfile": {"assignedLicense": "x", "esuEligibility": "Eligible"}})
    assert license_in_use({"softwareAssurance": {"softwareAssuranceCustomer": True}})
    # What the instance view shows of a machine without a profile: nothing a replacing PUT could drop.
    assert not license_in_use({"licenseStatus": "Licensed", "esuProfile": {"esuEligibility": "Ineligible",
                                                                           "licenseAssignmentState": "NotAssigned"}})
    assert not license_in_use(None)
