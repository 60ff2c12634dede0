"""``python -m arc_hotpatch twin``: the fleet twin alone, on loopback, until Ctrl-C."""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from typing import TextIO

from ..clocks import DEFAULT_START, ScaledClock, install_clock
from .faults import Faults, load_faults
from .fleet import Fleet
from .fleet_twin import HYBRID_COMPUTE_API_VERSION, FleetTwin


def run_twin_cli(
    port: int,
    fleet: Fleet,
    faults: Faults | str | None,
    speed: float,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    start: datetime = DEFAULT_START,
    tls: bool = True,
    ca_file: str | None = None,
) -> None:
    """Serve ``fleet`` on 127.0.0.1:``port`` with simulated time ``speed``x real time; block until Ctrl-C.

    HTTPS unless ``tls`` is off, its CA certificate written to ``ca_file`` (default: the temp folder). ``stop``
    lets a caller other than a terminal end it (tests, an embedding host).
    """
    out = out or sys.stdout
    clock = ScaledClock(speed, start)
    previous = install_clock(clock)  # anything else in this process shares the twin's time
    twin = FleetTwin(fleet, clock, load_faults(faults), tls=tls, ca_file=ca_file)
    try:
        base_url = twin.start(port)
        first = fleet.subscription_ids[0]
        windows = sum(1 for m in fleet.machines if m.is_windows)
        print(f"Fleet twin (Azure Resource Manager + simulated Arc fleet) listening on {base_url}", file=out)
        if twin.ca_file:
            print(f"CA certificate: {twin.ca_file}", file=out)
        print(
            f"  {len(fleet.machines)} machines ({windows} Windows) in {len(fleet.subscription_ids)} subscription(s), "
            f"seed {fleet.seed}, faults {twin.faults.name}, clock x{speed:g} from {clock.now():%Y-%m-%d %H:%M} UTC",
            file=out,
        )
        print("  subscriptions:", file=out)
        for subscription in fleet.subscription_ids:
            print(f"    {subscription}", file=out)
        cacert = f'--cacert "{twin.ca_file}" ' if twin.ca_file else ""
        print("  any bearer token is accepted; a request without one gets 401. Try:", file=out)
        print(
            f'    curl {cacert}-H "Authorization: Bearer twin" "{base_url}/subscriptions/{first}/providers/'
            f'Microsoft.HybridCompute/machines?api-version={HYBRID_COMPUTE_API_VERSION}"',
            file=out,
        )
        if twin.ca_file:
            print("  an SDK client: HybridComputeManagementClient(credential, subscription_id, "
                  f'base_url="{base_url}", connection_verify="{twin.ca_file}")', file=out)
        sample = fleet.machines[0].name
        print("  each machine's truth (boots, VSM, Hotpatch; no token needed, outside ARM):", file=out)
        print(f'    curl {cacert}"{base_url}/_twin/machines/{sample}"', file=out)
        waiter = stop or threading.Event()
        try:
            print("  Ctrl-C to stop.", file=out, flush=True)  # inside the try: a Ctrl-C right after it is handled
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print("Fleet twin stopped.", file=out, flush=True)
    finally:
        twin.stop()
        install_clock(previous)
