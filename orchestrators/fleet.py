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

from dataclasses import replace
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from core.contracts import (
    COUNT_MACHINES,
    LIST_MACHINES_FROM,
    LIST_SUBSCRIPTIONS,
    READ_MACHINE_WORKFLOWS,
    ROLLOUT_CHUNK,
    ROLLOUT_ORCHESTRATOR,
    ROLLOUT_SLICE,
    START_MACHINE_WORKFLOWS,
    ChunkInput,
    ChunkResult,
    Counts,
    Cursor,
    Discovery,
    Listing,
    ListingRequest,
    MachineCount,
    MachinesRead,
    ReadMachines,
    ReportRow,
    RolloutPlan,
    RolloutState,
    SliceResult,
    SliceState,
    StartedMachine,
    StartMachines,
    SubscriptionError,
)
from core.rollout import allocate, guardrail_tripped, merge_counts, summarize, wave_quotas

from .instances import chunk_instance_id
from .steps import ARM_RETRY, Steps

bp = df.Blueprint()

MAX_CHUNK = 50  # machines per chunk: bounds a chunk's history and output whatever the fleet size
CHUNK_POLL_FIRST_S = 120  # machines take minutes at best: looking more often only grows the history
CHUNK_POLL_MAX_S = 15 * 60


def _counts(rows: list[ReportRow]) -> Counts:
    return Counts(**summarize(row.to_json() for row in rows))


def _add(total: Counts, part: Counts) -> Counts:
    return Counts(**merge_counts(total.to_json(), part.to_json()))


@bp.function_name(ROLLOUT_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def rollout_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    state = RolloutState.from_json(context.get_input())
    policy = state.policy
    if state.plan is None:
        run_key = f"{context.instance_id}:{context.current_utc_datetime:%Y%m%dT%H%M%S}"
        context.set_custom_status({"phase": "discovering", "run_key": run_key})
        endpoint = policy.resolved_arm_endpoint
        subscriptions = list(policy.subscriptions) or (
            yield context.call_activity_with_retry(LIST_SUBSCRIPTIONS, ARM_RETRY, endpoint)
        )
        discovered = yield context.task_all([
            context.call_activity_with_retry(
                COUNT_MACHINES, ARM_RETRY, Discovery(s, endpoint, policy.resource_group)
            )
            for s in subscriptions
        ])
        discovered = [MachineCount.from_json(d) for d in discovered]
        counts = [d.count for d in discovered]
        plan = RolloutPlan(
            subscriptions=list(subscriptions), counts=counts, quotas=wave_quotas(sum(counts), policy.waves),
            # Subscriptions that could not be read: reported, the rest of the fleet goes on.
            errors=[SubscriptionError(s, d.error) for s, d in zip(subscriptions, discovered, strict=True) if d.error],
        )
        state = replace(
            state, run_key=run_key, plan=plan, wave=0, remaining=list(counts), cursors=[Cursor()] * len(subscriptions),
            chunks=[0] * len(subscriptions), totals=Counts(), halted=False,
        )
    plan = state.plan
    assert plan is not None
    wave = state.wave
    if wave >= len(plan.quotas):
        return finish(context, state)

    halted = state.halted
    quota = sum(state.remaining) if halted else plan.quotas[wave]
    takes = allocate(quota, state.remaining)
    context.set_custom_status(progress(state, "halting" if halted else "rolling_out", takes))
    slices = [
        context.call_sub_orchestrator(
            ROLLOUT_SLICE,
            SliceState(
                run_key=state.run_key, rollout_id=context.instance_id, subscription_index=index,
                subscription_id=plan.subscriptions[index], take=take, cursor=state.cursors[index],
                chunk=state.chunks[index], policy=policy, halted=halted,
            ).to_json(),
            f"{state.run_key}:w{wave}:s{index}",
        )
        for index, take in enumerate(takes)
        if take > 0
    ]
    results = [SliceResult.from_json(r) for r in (yield context.task_all(slices))]
    cursors, chunks, remaining = list(state.cursors), list(state.chunks), list(state.remaining)
    wave_counts = Counts()
    for result in results:
        index = result.subscription_index
        cursors[index] = result.cursor
        chunks[index] = result.chunk
        remaining[index] = max(0, remaining[index] - result.counts.machines)
        wave_counts = _add(wave_counts, result.counts)
    state = replace(state, cursors=cursors, chunks=chunks, remaining=remaining,
                    totals=_add(state.totals, wave_counts), waves_done=[*state.waves_done, wave_counts])
    if halted:
        return finish(context, state)
    more = sum(state.remaining) > 0
    if more and guardrail_tripped(wave_counts.escalations, wave_counts.machines, policy.guardrail):
        state = replace(state, halted=True, halt_wave=wave)
    else:
        state = replace(state, wave=wave + 1)
    context.continue_as_new(state.to_json())
    return None


def progress(state: RolloutState, phase: str, takes: list[int] | None = None) -> dict[str, Any]:
    plan = state.plan
    assert plan is not None
    return {
        "phase": phase, "run_key": state.run_key, "wave": state.wave + 1, "waves": len(plan.quotas),
        "machines": sum(plan.counts), "done": state.totals.machines, "totals": state.totals.to_json(),
        "subscriptions": len(plan.subscriptions), "chunks": list(state.chunks), "this_wave": takes or [],
        "halted_after_wave": state.halt_wave + 1 if state.halt_wave is not None else None,
        "errors": [e.to_json() for e in plan.errors],
    }


def finish(context: df.DurableOrchestrationContext, state: RolloutState) -> dict[str, Any]:
    plan = state.plan
    assert plan is not None
    context.set_custom_status(progress(state, "halted" if state.halted else "completed"))
    return {
        "run_key": state.run_key, "summary": state.totals.to_json(), "waves": [w.to_json() for w in state.waves_done],
        "halted": state.halted, "subscriptions": list(plan.subscriptions), "chunks": list(state.chunks),
        "errors": [e.to_json() for e in plan.errors],
    }


@bp.function_name(ROLLOUT_SLICE)
@bp.orchestration_trigger(context_name="context")
def rollout_slice(context: df.DurableOrchestrationContext) -> Steps:
    """One subscription's share of a wave: one chunk per execution, then continue as new."""
    state = SliceState.from_json(context.get_input())
    size = min(state.take, MAX_CHUNK)
    if size <= 0 or state.cursor.done:
        return SliceResult(state.subscription_index, state.cursor, state.chunk, state.counts).to_json()
    result = yield context.call_sub_orchestrator(
        ROLLOUT_CHUNK,
        ChunkInput(state.rollout_id, state.subscription_id, state.cursor, state.policy, size, state.halted).to_json(),
        chunk_instance_id(state.run_key, state.subscription_index, state.chunk),
    )
    result = ChunkResult.from_json(result)
    take = state.take - len(result.rows)
    if not result.rows:  # the subscription has fewer machines than counted (some were deleted)
        take = 0
    context.continue_as_new(replace(
        state, counts=_add(state.counts, _counts(result.rows)), cursor=result.cursor, chunk=state.chunk + 1,
        take=take,
    ).to_json())
    return None


@bp.function_name(ROLLOUT_CHUNK)
@bp.orchestration_trigger(context_name="context")
def rollout_chunk(context: df.DurableOrchestrationContext) -> Steps:
    """Up to ``take`` machines from the cursor: start or attach, poll until all are done, return rows."""
    chunk = ChunkInput.from_json(context.get_input())
    policy = chunk.policy
    listing = yield context.call_activity_with_retry(
        LIST_MACHINES_FROM, ARM_RETRY,
        ListingRequest(Discovery(chunk.subscription_id, policy.resolved_arm_endpoint, policy.resource_group),
                       chunk.cursor, chunk.take),
    )
    listing = Listing.from_json(listing)
    machine_ids = listing.machine_ids
    if chunk.halted:
        return ChunkResult([ReportRow.halted(m) for m in machine_ids], listing.cursor).to_json()
    # A sliding window: at most ``concurrency`` machines of this subscription in flight, refilled as
    # machines finish, so one slow machine does not hold back the others.
    queue = list(machine_ids)
    in_flight: list[StartedMachine] = []
    rows: list[ReportRow] = []
    delay = CHUNK_POLL_FIRST_S
    while queue or in_flight:
        free = policy.concurrency - len(in_flight)
        if free > 0 and queue:
            batch, queue = queue[:free], queue[free:]
            started = yield context.call_activity(
                START_MACHINE_WORKFLOWS, StartMachines(batch, policy, chunk.rollout_id)
            )
            in_flight += [StartedMachine.from_json(s) for s in started]
        # The waiting instances, so a rollout-wide approval finds machines other triggers started too.
        context.set_custom_status(
            {"done": len(rows), "running": len(in_flight), "queued": len(queue),
             "pending": [item.instance_id for item in in_flight]}
        )
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        read = MachinesRead.from_json((yield context.call_activity(READ_MACHINE_WORKFLOWS, ReadMachines(in_flight))))
        rows.extend(read.rows)
        in_flight = read.pending
        delay = CHUNK_POLL_FIRST_S if read.rows else min(delay * 2, CHUNK_POLL_MAX_S)
    # A machine another trigger started carries that trigger's spelling of its id (Event Grid's resourceUri
    # casing is the request's, e.g. "resourcegroups"); ARM ids are case-insensitive, so match on the folded id
    # and report the machine under the id this listing gave it, in listing order.
    listed = {m.lower(): m for m in machine_ids}
    position = {m.lower(): i for i, m in enumerate(machine_ids)}
    rows = [replace(row, id=listed.get(row.id.lower(), row.id)) for row in rows]
    rows.sort(key=lambda r: position.get(r.id.lower(), len(position)))
    context.set_custom_status({"done": len(rows), "running": 0, "queued": 0, "pending": []})
    return ChunkResult(rows, listing.cursor).to_json()  # plain JSON: the report reads chunk outputs
