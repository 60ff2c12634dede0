"""Errors raised by the local durable host's Python API (each maps to an HTTP status of the extension's API)."""

from __future__ import annotations


class DurableHostError(Exception):
    """Base class; ``http_status`` is what the Durable extension's HTTP API answers."""

    http_status = 500


class OrchestratorNotFound(DurableHostError):
    http_status = 400


class InstanceNotFound(DurableHostError):
    http_status = 404


class InstanceGone(DurableHostError):
    """The instance is in a terminal state (Completed, Failed, Terminated)."""

    http_status = 410


class InstanceAlreadyExists(DurableHostError):
    http_status = 409


class DeadlockError(DurableHostError):
    """Nothing can progress any more while awaited instances are still not finished."""

    def __init__(self, message: str, waiting: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.waiting = waiting


class HostTimeoutError(DurableHostError, TimeoutError):
    """The real-time budget of a ``run_*`` call ran out."""
