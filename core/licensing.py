"""License profile bodies for enabling Hotpatch without the billing and data-loss traps.

- Never set the top-level ``productProfile.subscriptionStatus``: that enrolls the
  machine in Windows Server pay-as-you-go, which is billed.
- Never drop the ESU profile or another product feature: update an existing
  profile with PATCH carrying the whole merged feature list (arrays are replaced
  whole by PATCH), and create one with PUT only when none exists.
"""

from __future__ import annotations

from typing import Any

HOTPATCH_FEATURE = "Hotpatch"
PRODUCT_TYPE = "WindowsServer"

# Read-back feature states → the request vocabulary (LicenseProfileSubscriptionStatusUpdate).
_REQUEST_STATUS = {"enabled": "Enable", "enabling": "Enable", "disabled": "Disable", "disabling": "Disable"}


def new_hotpatch_profile(location: str) -> dict[str, Any]:
    """PUT body for a machine without a license profile."""
    return {
        "location": location,
        "properties": {
            "productProfile": {
                "productType": PRODUCT_TYPE,
                "productFeatures": [{"name": HOTPATCH_FEATURE, "subscriptionStatus": "Enable"}],
            }
        },
    }


def merged_hotpatch_update(current_features: list[dict[str, Any]]) -> dict[str, Any]:
    """PATCH body: the current product features (as update requests) with Hotpatch set to Enable."""
    features: list[dict[str, Any]] = []
    seen_hotpatch = False
    for feature in current_features:
        name = str(feature.get("name", ""))
        if name.lower() == HOTPATCH_FEATURE.lower():
            features.append({"name": name, "subscriptionStatus": "Enable"})
            seen_hotpatch = True
            continue
        kept: dict[str, Any] = {"name": name}
        status = _REQUEST_STATUS.get(str(feature.get("subscriptionStatus", "")).lower())
        if status:
            kept["subscriptionStatus"] = status
        features.append(kept)
    if not seen_hotpatch:
        features.append({"name": HOTPATCH_FEATURE, "subscriptionStatus": "Enable"})
    return {"properties": {"productProfile": {"productType": PRODUCT_TYPE, "productFeatures": features}}}

