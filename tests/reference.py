"""Reference data the tests read: the Azure REST API specifications copied into the repository.

Everything a test reads lives in the repository (a clone on its own passes ``./dev test``); the
copies and their origin commits are listed in ``twin/azure-rest-api-specs/SOURCE.md``.
"""

from __future__ import annotations

from pathlib import Path

SPECS_ROOT = Path(__file__).resolve().parent / "twin" / "azure-rest-api-specs" / "specification"
EVENT_GRID_RESOURCES = SPECS_ROOT / "eventgrid" / "data-plane" / "Microsoft.Resources" / "stable" / "2018-01-01"
EVENT_GRID_EXAMPLE = EVENT_GRID_RESOURCES / "examples" / "event-grid-schema" / "resource_write_success.json"
CLOUD_EVENTS_EXAMPLE = EVENT_GRID_RESOURCES / "examples" / "cloud-events-schema" / "resource_write_success.json"
