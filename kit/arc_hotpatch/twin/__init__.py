"""The fleet twin: an offline Azure Resource Manager + simulated Arc fleet on loopback.

The app reaches it through the real ``azure-mgmt-hybridcompute`` SDK (see
``core.azure_clients``); only the endpoint and the credential differ from Azure.
"""

from .calls import ExchangeRecord
from .faults import CHAOS, NO_FAULTS, Faults, FaultsError, load_faults
from .fleet import (
    MACHINE_ATTRIBUTES,
    Fleet,
    MachineSpec,
    ScenarioError,
    default_fleet,
    fleet_from_options,
    generate_fleet,
    load_scenario,
    machine_spec,
)
from .fleet_twin import HYBRID_COMPUTE_API_VERSION, FleetTwin
from .inspection import MachineSnapshot, RunSnapshot
from .machine import LicenseWrite

__all__ = [
    "CHAOS",
    "HYBRID_COMPUTE_API_VERSION",
    "MACHINE_ATTRIBUTES",
    "NO_FAULTS",
    "ExchangeRecord",
    "Faults",
    "FaultsError",
    "Fleet",
    "FleetTwin",
    "LicenseWrite",
    "MachineSnapshot",
    "MachineSpec",
    "RunSnapshot",
    "ScenarioError",
    "default_fleet",
    "fleet_from_options",
    "generate_fleet",
    "load_faults",
    "load_scenario",
    "machine_spec",
]
