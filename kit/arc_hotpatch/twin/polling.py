"""Long-running-operation polling for SDK clients that drive the twin under a virtual clock.

The app itself starts Run Commands and license-profile writes with ``polling=False`` and looks
again from durable timers, so it never waits on an LRO. A script or test that does wait on a
twin LRO (``poller.result()``) passes ``polling=lro_polling(twin_url)``.
"""

from __future__ import annotations

from typing import Any

from azure.mgmt.core.polling.arm_polling import ARMPolling

from core.clock import current_clock

LRO_DEFAULT_DELAY_S = 30  # the generated clients' polling_interval: used when ARM sends no Retry-After


def _clock_counts_runnable_work() -> bool:
    """True for a virtual clock: one that only jumps when no ``running()`` work is left."""
    return hasattr(current_clock(), "running")


class CallerThreadARMPolling(ARMPolling):
    """ARM polling that, under a virtual clock, polls in the thread that started the operation.

    azure-core's ``LROPoller`` polls in a thread of its own. A caller inside
    ``VirtualClock.running()`` waiting in ``poller.result()`` stays "runnable" while the poller
    thread sleeps, so the clock would never jump to the poller's wake-up. Polling to completion
    inside ``initialize`` (the caller's thread) makes ``LROPoller`` find the operation finished
    and start no thread; the caller's own sleeps then release the clock. With a real-time clock
    this class behaves exactly like ``ARMPolling``.
    """

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        super().initialize(client, initial_response, deserialization_callback)
        if _clock_counts_runnable_work() and not self.finished():
            self.run()


def lro_polling(endpoint: str) -> ARMPolling:
    """The polling method for one long-running call (``begin_*(..., polling=lro_polling(endpoint))``)."""
    return CallerThreadARMPolling(LRO_DEFAULT_DELAY_S, path_format_arguments={"endpoint": endpoint})
