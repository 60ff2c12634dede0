"""What every orchestrator shares: the generator type of a workflow step and the ARM retry policy."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

Steps = Generator[Any, Any, Any]  # a workflow step: yields durable tasks, returns its result

# An activity's ARM call that failed after the SDK's own retries (429/5xx honouring Retry-After):
# try again later, on a durable timer, a few times.
ARM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=10_000, max_number_of_attempts=4)
