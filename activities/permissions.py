"""The Azure RBAC actions each activity needs, declared where the call is made.

``infra/`` grants a custom role with exactly ``required_arm_actions()``; a test
compares the two, so adding an Azure call without its permission (or granting
one nobody uses) fails CI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

_REQUIRED: dict[str, set[str]] = {}


def requires_arm_actions(*actions: str) -> Callable[[F], F]:
    """Record that the decorated activity performs these ARM operations."""

    def mark(func: F) -> F:
        _REQUIRED.setdefault(func.__qualname__, set()).update(actions)
        return func

    return mark


def required_arm_actions() -> list[str]:
    """Every ARM action the app's activities declare (imports the activities first)."""
    import activities.azure_calls  # noqa: F401  (registers the declarations)

    return sorted({action for actions in _REQUIRED.values() for action in actions})
