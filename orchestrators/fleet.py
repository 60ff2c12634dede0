"""The fleet rollout (SPEC §3): subscriptions → paged discovery → waves of per-machine orchestrations.

Three levels keep every history bounded whatever the fleet size:

- ``rollout_orchestrator``: plans the waves from per-subscription counts, runs one
  wave per execution (one ``rollout_slice`` per subscription, in parallel),
  applies the guardrail, then continues as new with a few counters and cursors;
- ``rollout_slice``: one subscription's share of a wave, one chunk per
  execution, continuing as new after each;
- ``rollout_chunk``: up to ``MAX_CHUNK`` machines: lists them from the
  subscription's cursor, starts (or attaches to) their singleton orchestrations
  with at most ``concurrency`` in flight, polls them on durable timers and
  returns their report rows. Chunk instance ids
  are enumerable, so the report is read from the chunks' outputs.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from arc_hotpatch.domain.facts import parse_machine_id
from arc_hotpatch.domain.policy import Policy
from arc_hotpatch.domain.rollout import allocate, guardrail_tripped, merge_counts, summarize, wave_quotas
from arc_hotpatch.domain.vocabulary import FinalState, Reason

bp = df.Blueprint()

ROLLOUT_ORCHESTRATOR = "rollout_orchestrator"
ARM_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=10_000, max_number_of_attempts=4)
MAX_CHUNK = 50  # machines per chunk: bounds a chunk's history and output whatever the fleet size
CHUNK_POLL_FIRST_S = 120  # machines take minutes at best: looking more often only grows the history
CHUNK_POLL_MAX_S = 15 * 60
EMPTY_COUNTS: dict[str, Any] = {"machines": 0, "by_state": {}, "reboots": 0, "escalations": 0}

Steps = Generator[Any, Any, Any]


def chunk_instance_id(run_key: str, subscription_index: int, chunk_index: int) -> str:
    """Chunks are numbered per subscription, so a report can enumerate them without a list."""
    return f"{run_key}:s{subscription_index}:c{chunk_index}"


@bp.orchestration_trigger(context_name="context")
def rollout_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    state: dict[str, Any] = dict(context.get_input() or {})
    policy = Policy.from_json(state.get("policy") or {})
    if "plan" not in state:
        state["run_key"] = f"{context.instance_id}:{context.current_utc_datetime:%Y%m%dT%H%M%S}"
        context.set_custom_status({"phase": "discovering", "run_key": state["run_key"]})
        subscriptions = list(policy.subscriptions) or (
            yield context.call_activity_with_retry(
                "list_subscriptions", ARM_RETRY, {"arm_endpoint": policy.resolved_arm_endpoint}
            )
        )
        discovered = yield context.task_all([
            context.call_activity_with_retry(
                "count_machines", ARM_RETRY,
                {"subscription_id": s, "resource_group": policy.resource_group,
                 "arm_endpoint": policy.resolved_arm_endpoint},
            )
            for s in subscriptions
        ])
        counts = [d["count"] for d in discovered]
        state["plan"] = {
            "subscriptions": list(subscriptions),
            "counts": counts,
            "quotas": wave_quotas(sum(counts), policy.waves),
            # Subscriptions that could not be read: reported, the rest of the fleet goes on.
            "errors": [{"subscription_id": s, "error": d["error"]}
                       for s, d in zip(subscriptions, discovered, strict=True) if d.get("error")],
        }
        state.update(
            wave=0, remaining=list(counts), cursors=[None] * len(subscriptions), chunks=[0] * len(subscriptions),
            totals=dict(EMPTY_COUNTS), halted=False,
        )
    plan = state["plan"]
    wave = state["wave"]
    if wave >= len(plan["quotas"]):
        return finish(context, state)

    halted = state["halted"]
    quota = sum(state["remaining"]) if halted else plan["quotas"][wave]
    takes = allocate(quota, state["remaining"])
    context.set_custom_status(progress(state, "halting" if halted else "rolling_out", takes))
    slices = [
        context.call_sub_orchestrator(
            "rollout_slice",
            {
                "run_key": state["run_key"], "rollout_id": context.instance_id, "subscription_index": index,
                "subscription_id": plan["subscriptions"][index], "take": take, "cursor": state["cursors"][index],
                "chunk": state["chunks"][index], "policy": state["policy"], "halted": halted,
                "counts": dict(EMPTY_COUNTS),
            },
            f"{state['run_key']}:w{wave}:s{index}",
        )
        for index, take in enumerate(takes)
        if take > 0
    ]
    results = yield context.task_all(slices)
    wave_counts = dict(EMPTY_COUNTS)
    for result in results:
        index = result["subscription_index"]
        state["cursors"][index] = result["cursor"]
        state["chunks"][index] = result["chunk"]
        state["remaining"][index] = max(0, state["remaining"][index] - result["counts"]["machines"])
        wave_counts = merge_counts(wave_counts, result["counts"])
    state["totals"] = merge_counts(state["totals"], wave_counts)
    state.setdefault("waves_done", []).append(wave_counts)
    if halted:
        return finish(context, state)
    more = sum(state["remaining"]) > 0
    if more and guardrail_tripped(wave_counts["escalations"], wave_counts["machines"], policy.guardrail):
        state["halted"] = True
        state["halt_wave"] = wave
    else:
        state["wave"] = wave + 1
    context.continue_as_new(state)
    return None


def progress(state: dict[str, Any], phase: str, takes: list[int] | None = None) -> dict[str, Any]:
    plan = state["plan"]
    return {
        "phase": phase, "run_key": state["run_key"], "wave": state["wave"] + 1, "waves": len(plan["quotas"]),
        "machines": sum(plan["counts"]), "done": state["totals"]["machines"], "totals": state["totals"],
        "subscriptions": len(plan["subscriptions"]), "chunks": state["chunks"], "this_wave": takes or [],
        "halted_after_wave": state["halt_wave"] + 1 if "halt_wave" in state else None,
        "errors": plan["errors"],
    }


def finish(context: df.DurableOrchestrationContext, state: dict[str, Any]) -> dict[str, Any]:
    status = progress(state, "halted" if state.get("halted") else "completed")
    context.set_custom_status(status)
    return {
        "run_key": state["run_key"], "summary": state["totals"], "waves": state.get("waves_done", []),
        "halted": bool(state.get("halted")), "subscriptions": state["plan"]["subscriptions"],
        "chunks": state["chunks"], "errors": state["plan"]["errors"],
    }


@bp.orchestration_trigger(context_name="context")
def rollout_slice(context: df.DurableOrchestrationContext) -> Steps:
    """One subscription's share of a wave: one chunk per execution, then continue as new."""
    state: dict[str, Any] = dict(context.get_input())
    size = min(state["take"], MAX_CHUNK)
    if size <= 0 or (state["cursor"] or {}).get("done"):
        return {key: state[key] for key in ("subscription_index", "cursor", "chunk", "counts")}
    result = yield context.call_sub_orchestrator(
        "rollout_chunk",
        {key: state[key] for key in ("rollout_id", "subscription_id", "cursor", "policy", "halted")} | {"take": size},
        chunk_instance_id(state["run_key"], state["subscription_index"], state["chunk"]),
    )
    state["counts"] = merge_counts(state["counts"], summarize(result["rows"]))
    state["cursor"] = result["cursor"]
    state["chunk"] += 1
    state["take"] -= len(result["rows"])
    if not result["rows"]:  # the subscription has fewer machines than counted (some were deleted)
        state["take"] = 0
    context.continue_as_new(state)
    return None


@bp.orchestration_trigger(context_name="context")
def rollout_chunk(context: df.DurableOrchestrationContext) -> Steps:
    """Up to ``take`` machines from the cursor: start or attach, poll until all are done, return rows."""
    state: dict[str, Any] = context.get_input()
    policy = Policy.from_json(state["policy"])
    listing = yield context.call_activity_with_retry(
        "list_machines_from", ARM_RETRY,
        {"subscription_id": state["subscription_id"], "resource_group": policy.resource_group,
         "cursor": state["cursor"], "take": state["take"], "arm_endpoint": policy.resolved_arm_endpoint},
    )
    machine_ids: list[str] = listing["machine_ids"]
    if state["halted"]:
        return {"rows": [halted_row(m) for m in machine_ids], "cursor": listing["cursor"]}
    # A sliding window: at most ``concurrency`` machines of this subscription in flight, refilled as
    # machines finish, so one slow machine does not hold back the others.
    queue = list(machine_ids)
    in_flight: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    delay = CHUNK_POLL_FIRST_S
    while queue or in_flight:
        free = policy.concurrency - len(in_flight)
        if free > 0 and queue:
            batch, queue = queue[:free], queue[free:]
            in_flight += yield context.call_activity(
                "start_machine_workflows",
                {"machine_ids": batch, "policy": state["policy"], "rollout_id": state["rollout_id"]},
            )
        # The waiting instances, so a rollout-wide approval finds machines other triggers started too.
        context.set_custom_status(
            {"done": len(rows), "running": len(in_flight), "queued": len(queue),
             "pending": [item["instance_id"] for item in in_flight]}
        )
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        read = yield context.call_activity("read_machine_workflows", {"instances": in_flight})
        rows.extend(read["rows"])
        in_flight = read["pending"]
        delay = CHUNK_POLL_FIRST_S if read["rows"] else min(delay * 2, CHUNK_POLL_MAX_S)
    # A machine another trigger started carries that trigger's spelling of its id (Event Grid's resourceUri
    # casing is the request's, e.g. "resourcegroups"); ARM ids are case-insensitive, so match on the folded id
    # and report the machine under the id this listing gave it, in listing order.
    listed = {m.lower(): m for m in machine_ids}
    position = {m.lower(): i for i, m in enumerate(machine_ids)}
    for row in rows:
        row["id"] = listed.get(str(row["id"]).lower(), row["id"])
    rows.sort(key=lambda r: position.get(str(r["id"]).lower(), len(position)))
    context.set_custom_status({"done": len(rows), "running": 0, "queued": 0, "pending": []})
    return {"rows": rows, "cursor": listing["cursor"]}


def halted_row(machine_id: str) -> dict[str, Any]:
    """A machine the guardrail stopped the rollout before: nothing was read or changed."""
    subscription_id, _, name = parse_machine_id(machine_id)
    return {
        "id": machine_id, "subscription_id": subscription_id, "name": name, "state": FinalState.HALTED.value,
        "reason": Reason.GUARDRAIL.value, "actions": [], "reboots": 0, "os_version": "", "baseline": "unknown",
        "detail": "the rollout guardrail stopped before this machine",
    }
