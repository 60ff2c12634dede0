"""The fleet rollout (SPEC §3): a rolling window per subscription, waves of the machines that change.

- ``rollout_orchestrator`` (one per rollout run): discovers the subscriptions, counts their
  machines, starts one ``rollout_window`` per subscription, and runs the waves: it reads its
  windows' progress, grants each window how many change runs it may start, judges the guardrail
  as results arrive, halts. What it decides is in its custom status, which the windows read.
- ``rollout_window`` (one per subscription): keeps at most ``concurrency`` machine orchestrations
  in flight, paging through the subscription's listing and starting the next machine as soon as
  it reads that one has finished. Before the final wave it starts machines to assess only: one
  that needs a change ends queued, and the window starts it again when the rollout grants it a
  place in a wave. In the final wave a machine is assessed and changed in one run.

Machines record their outcome under their window's id (``rollout_record`` instances whose output
is the record): the window reads the new ones every ``POLL_S`` or so, the report reads them all,
and each rollout run keeps its own. Nothing here waits for an external event (the Python SDK
keeps at most one unawaited event per name), so nothing is lost; every orchestration continues
as new after a bounded number of steps, with state bounded by ``concurrency``, never by the fleet.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskBase

from core.contracts import (
    COUNT_MACHINES,
    LIST_MACHINES_FROM,
    LIST_SUBSCRIPTIONS,
    READ_INSTANCES,
    READ_MACHINE_WORKFLOWS,
    READ_RECORDS,
    ROLLOUT_ORCHESTRATOR,
    ROLLOUT_RECORD,
    ROLLOUT_WINDOW,
    START_MACHINES,
    START_WINDOWS,
    Counts,
    Discovery,
    Grant,
    InFlight,
    InstanceView,
    Listing,
    ListingRequest,
    MachineCount,
    MachineDone,
    MachineInput,
    MachinesRead,
    Progress,
    ReadMachines,
    RecordPage,
    RecordQuery,
    ReportRow,
    RolloutPlan,
    RolloutState,
    StartedMachine,
    StartedMachines,
    StartMachines,
    SubscriptionError,
    WindowState,
    WindowView,
)
from core.policy import Policy
from core.rollout import (
    POLL_S,
    WindowProgress,
    decide_waves,
    guardrail_tripped,
    next_read,
    read_cadence,
    wave_bounds,
    wave_count,
)
from core.schedule import parse_utc
from core.vocabulary import FinalState, Reason

from .instances import halted_record_id, outcome_record_id, record_prefix, window_instance_id
from .steps import ARM_RETRY, Steps

bp = df.Blueprint()

STEPS_PER_EXECUTION = 12  # then continue as new: every history stays bounded
# A window's steps differ in what they call (a poll alone, or listing and starting too): it continues as new
# after a number of durable tasks instead, so its histories are one size whatever the fleet makes a step do.
WINDOW_TASKS_PER_EXECUTION = 36
WINDOW_IDLE_POLL_S = 5 * 60  # a window with nothing in flight only waits for the rollout's grants
RECORD_MARGIN_S = 120  # records may become visible a little after they are created: read back this far
# A window opening on hundreds of machines would spend ARM's budget (writes: 200 at once, then 10 per second)
# in a second and meet 429s: it starts at most START_BATCH at a time, START_BATCH_S apart (6 a second, about
# 12 ARM writes a second while their first scripts start: 500 machines overdraw the 10 per second refill by
# about 170 writes, inside the 200 burst).
START_BATCH = 30
START_BATCH_S = 5
RECONCILE_S = 30 * 60  # a window looks at its machines this often, for one that ended without a record
ATTACHED_POLL_S = 2 * 60  # machines someone else started record nothing for us: looked at this often
HALTED_PER_PAGE = 100


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@bp.function_name(ROLLOUT_RECORD)
@bp.orchestration_trigger(context_name="context")
def rollout_record(context: df.DurableOrchestrationContext) -> None:
    """A record: its input, kept by the durable store under an id its window enumerates. It returns nothing: a
    copy as its output would double what every read of the records carries (and the recording parent's history)."""
    return None


# --- the rollout ---------------------------------------------------------------------------------------


@bp.function_name(ROLLOUT_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def rollout_orchestrator(context: df.DurableOrchestrationContext) -> Steps:
    state = RolloutState.from_json(context.get_input())
    if state.plan is None:
        state = yield from _plan(context, state)
    for _ in range(STEPS_PER_EXECUTION):
        state = _advance_waves(state)
        context.set_custom_status(_rollout_status(state))
        if all(view.progress.done for view in state.windows):
            return _rollout_result(state)
        yield context.create_timer(next_read(state.policy, context.current_utc_datetime, state.poll_s or POLL_S))
        before = [view.progress for view in state.windows]
        state = yield from _read_windows(context, state)
        poll_s, news_at = read_cadence(state.policy, context.current_utc_datetime, state.poll_s, state.news_at,
                                       before != [view.progress for view in state.windows])
        state = replace(state, poll_s=poll_s, news_at=news_at)
    context.continue_as_new(state.to_json())
    return None


def _plan(context: df.DurableOrchestrationContext, state: RolloutState) -> Steps:
    policy = state.policy
    run_key = f"{context.instance_id}:{context.current_utc_datetime:%Y%m%dT%H%M%S}"
    context.set_custom_status({"phase": "discovering", "run_key": run_key})
    endpoint = policy.resolved_arm_endpoint
    subscriptions = list(policy.subscriptions) or (
        yield context.call_activity_with_retry(LIST_SUBSCRIPTIONS, ARM_RETRY, endpoint)
    )
    counted = yield context.task_all([
        context.call_activity_with_retry(COUNT_MACHINES, ARM_RETRY, Discovery(s, endpoint, policy.resource_group))
        for s in subscriptions
    ])
    counted = [MachineCount.from_json(c) for c in counted]
    plan = RolloutPlan(
        subscriptions=list(subscriptions), counts=[c.count for c in counted],
        # Subscriptions that could not be read: reported, the rest of the fleet goes on.
        errors=[SubscriptionError(s, c.error) for s, c in zip(subscriptions, counted, strict=True) if c.error],
    )
    unreadable = {e.subscription_id for e in plan.errors}
    windows = [
        WindowView(index, subscription, window_instance_id(run_key, index), count,
                   Progress(unassessed=count, unstarted=count))
        for index, (subscription, count) in enumerate(zip(plan.subscriptions, plan.counts, strict=True))
        if subscription not in unreadable
    ]
    state = replace(state, run_key=run_key, plan=plan, windows=windows, budgets=[0] * len(windows))
    state = _advance_waves(state)
    context.set_custom_status(_rollout_status(state))  # the windows' first read finds their grants
    if windows:
        yield context.call_activity_with_retry(START_WINDOWS, ARM_RETRY, [
            WindowState(policy=policy, run_key=run_key, rollout_id=context.instance_id, index=view.index,
                        subscription_id=view.subscription_id, total=view.total,
                        grant=_grant(state, position), kind=state.kind).to_json()
            for position, view in enumerate(windows)
        ])
    return state


def _progress(view: WindowView) -> WindowProgress:
    p = view.progress
    return WindowProgress(p.changeable, p.unassessed, p.unstarted, p.queued_waiting, tuple(p.granted),
                          tuple(p.members_done), tuple(p.escalated), p.done)


def _advance_waves(state: RolloutState) -> RolloutState:
    """Decide the waves from the windows' progress (a halt stands; a window's own halt is the rollout's)."""
    if state.halted:
        return state
    halted_by = next((view.progress.halted for view in state.windows if view.progress.halted), "")
    if halted_by:
        return replace(state, halted=True, halt_detail=halted_by)
    decision = decide_waves(state.policy.waves, state.policy.guardrail, state.wave, state.budgets,
                            [_progress(view) for view in state.windows])
    lo = sum(view.progress.changeable for view in state.windows)
    bounds = wave_bounds(state.policy.waves, decision.wave, lo, lo + sum(v.progress.unassessed for v in state.windows))
    return replace(state, wave=decision.wave, budgets=list(decision.budgets), final=decision.final,
                   halted=decision.halted, halt_detail=decision.detail, size_hi=bounds.size_hi)


def _grant(state: RolloutState, position: int) -> Grant:
    """What the rollout says to the window at ``position``: its budget, and the wave as the others stand."""
    elsewhere = sum(view.progress.escalated[state.wave] if state.wave < len(view.progress.escalated) else 0
                    for other, view in enumerate(state.windows) if other != position)
    return Grant(wave=state.wave, budget=state.budgets[position], final=state.final, halted=state.halted,
                 detail=state.halt_detail, escalated_elsewhere=elsewhere, size_hi=state.size_hi)


def _read_windows(context: df.DurableOrchestrationContext, state: RolloutState) -> Steps:
    ids = [view.instance_id for view in state.windows if not view.progress.done]
    if not ids:
        return state
    views = {v.instance_id: v for v in (InstanceView.from_json(x) for x in (
        yield context.call_activity_with_retry(READ_INSTANCES, ARM_RETRY, ids)))}
    windows = []
    for window in state.windows:
        view = views.get(window.instance_id)
        progress = window.progress
        if view is not None and view.runtime_status == "Completed" and isinstance(view.output, dict):
            progress = Progress.from_json(view.output)
        elif view is not None and isinstance(view.custom_status, dict) and "progress" in view.custom_status:
            progress = Progress.from_json(view.custom_status["progress"])
        elif view is not None and view.runtime_status in ("Failed", "Terminated"):
            progress = replace(progress, done=True)  # a window that died: its machines are no longer ours
        windows.append(replace(window, progress=progress))
    return replace(state, windows=windows)


def _finished(state: RolloutState) -> Counts:
    total = Counts()
    for view in state.windows:
        total = total + view.progress.finished
    return total


def _rollout_status(state: RolloutState) -> dict[str, Any]:
    plan = state.plan
    assert plan is not None
    done = all(view.progress.done for view in state.windows)
    phase = "halted" if state.halted else ("completed" if done else "rolling_out")
    finished = _finished(state)
    return {
        "phase": phase, "run_key": state.run_key, "wave": state.wave + 1, "waves": wave_count(state.policy.waves),
        "machines": sum(plan.counts), "done": finished.machines, "totals": finished.to_json(),
        "subscriptions": len(plan.subscriptions), "subscription_ids": list(plan.subscriptions),
        "windows": [view.instance_id for view in state.windows],
        "grants": {str(view.index): _grant(state, position).to_json() for position, view in enumerate(state.windows)},
        "halted_after_wave": state.wave + 1 if state.halted else None, "halt_detail": state.halt_detail,
        "errors": [e.to_json() for e in plan.errors],
    }


def _rollout_result(state: RolloutState) -> dict[str, Any]:
    plan = state.plan
    assert plan is not None
    return {
        "run_key": state.run_key, "summary": _finished(state).to_json(), "halted": state.halted,
        "subscriptions": list(plan.subscriptions), "windows": [view.instance_id for view in state.windows],
        "errors": [e.to_json() for e in plan.errors],
    }


# --- one subscription's window ---------------------------------------------------------------------------


@bp.function_name(ROLLOUT_WINDOW)
@bp.orchestration_trigger(context_name="context")
def rollout_window(context: df.DurableOrchestrationContext) -> Steps:
    window = Window(context, WindowState.from_json(context.get_input()))
    while window.tasks < WINDOW_TASKS_PER_EXECUTION:
        yield from window.refill()
        context.set_custom_status(window.status())
        if window.finished:
            return (yield from window.close())
        yield window.counted(context.create_timer(window.next_poll()))
        yield from window.poll()
    context.continue_as_new(window.state.to_json())
    return None


class Window:
    """The steps of ``rollout_window`` over its state (rebuilt identically on every replay)."""

    def __init__(self, context: df.DurableOrchestrationContext, state: WindowState) -> None:
        self.context = context
        self.tasks = 0  # durable tasks this execution has scheduled (replayed alike: the same code schedules them)
        now = _iso(context.current_utc_datetime)
        self.state = replace(state, looked_at=state.looked_at or now, reconciled_at=state.reconciled_at or now,
                             seen_since=state.seen_since or now, news_at=state.news_at or now)
        self._apply_grant(state.grant)

    def counted(self, task: TaskBase) -> TaskBase:
        """``task``, counted toward this execution's budget."""
        self.tasks += 1
        return task

    def _activity(self, name: str, payload: Any) -> TaskBase:
        return self.counted(self.context.call_activity_with_retry(name, ARM_RETRY, payload))

    def _record(self, record: Any, instance_id: str) -> TaskBase:
        return self.counted(self.context.call_sub_orchestrator(ROLLOUT_RECORD, record, instance_id))

    # --- what it knows -----------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime

    @property
    def policy(self) -> Policy:
        return self.state.policy

    @property
    def instance_id(self) -> str:
        return window_instance_id(self.state.run_key, self.state.index)

    @property
    def final_wave(self) -> int:
        return wave_count(self.policy.waves) - 1

    @property
    def queued_waiting(self) -> int:
        return self.state.queued - self.state.queue_taken

    @property
    def grants_started(self) -> int:
        """Change runs started for queued machines: what the rollout's budget counts."""
        return self.state.queue_taken

    @property
    def unassessed(self) -> int:
        assessing = sum(1 for f in self.state.in_flight if f.kind in ("assess", "full") and not f.attached)
        assessing += len(self.state.deferred)  # read Disconnected: assessed again later
        if self.state.cursor.done:
            return assessing
        return max(assessing, self.state.total - self.state.assessed)

    @property
    def unstarted(self) -> int:
        if self.state.cursor.done:
            return len(self.state.deferred)
        started = self.state.assessed + sum(1 for f in self.state.in_flight if f.kind in ("assess", "full"))
        return max(1, self.state.total - started)  # the listing is not done: at least one is left

    @property
    def finished(self) -> bool:
        if self.state.in_flight:
            return False
        return self.state.halted or (self.state.cursor.done and self.queued_waiting == 0 and not self.state.deferred)

    def progress(self, done: bool = False) -> Progress:
        s = self.state
        return Progress(
            changeable=s.changeable, unassessed=0 if done else self.unassessed,
            unstarted=0 if done else self.unstarted, queued_waiting=self.queued_waiting,
            granted=list(s.granted), members_done=list(s.members_done), escalated=list(s.escalated), done=done,
            finished=s.finished, halted=s.halt_detail if s.halted else "",
        )

    def status(self) -> dict[str, Any]:
        state = self.state
        return {
            "phase": "halted" if state.halted else ("final_wave" if state.final else f"wave {state.grant.wave + 1}"),
            "subscription_id": state.subscription_id, "in_flight": len(state.in_flight),
            # The instances it waits for, so a rollout-wide approval finds machines other triggers started too.
            "pending": [f.instance_id for f in state.in_flight],
            "progress": self.progress().to_json(),
        }

    # --- starting machines -----------------------------------------------------------------------------------

    def _template(self, assess_only: bool, recheck: bool = False) -> MachineInput:
        return MachineInput(machine_id="", policy=self.policy, rollout_id=self.state.rollout_id,
                            record_under=self.instance_id, assess_only=assess_only, recheck=recheck,
                            wave=0 if assess_only else self.state.grant.wave + 1, kind=self.state.kind)

    def refill(self) -> Steps:
        """Fill the free slots: first the change runs the rollout granted, then the next machines listed."""
        state = self.state
        if state.halted:
            return
        free = min(START_BATCH, self.policy.concurrency - len(state.in_flight))
        allowed = self.queued_waiting if state.final else max(0, state.grant.budget - self.grants_started)
        changes = min(free, allowed, self.queued_waiting)
        if changes > 0:
            ids = yield from self._take_queued(changes)
            yield from self._start(StartMachines(self._template(False), machine_ids=ids), "change")
            free -= changes
        due = [d for d in self.state.deferred if parse_utc(d[1]) <= self.now][:max(0, free)]
        if due:
            # Read Disconnected a grace period ago: read again, as a machine new to the window.
            self.state = replace(self.state, deferred=[d for d in self.state.deferred if d not in due])
            final = self.state.final
            yield from self._start(StartMachines(self._template(not final, recheck=True),
                                                 machine_ids=[d[0] for d in due]), "full" if final else "assess")
            free -= len(due)
        if free > 0 and not self.state.cursor.done:
            where = Discovery(state.subscription_id, self.policy.resolved_arm_endpoint, self.policy.resource_group)
            listing = Listing.from_json((yield self._activity(
                LIST_MACHINES_FROM, ListingRequest(where, self.state.cursor, free))))
            self.state = replace(self.state, cursor=listing.cursor)
            if listing.machine_ids:
                final = self.state.final
                yield from self._start(StartMachines(self._template(not final), machine_ids=listing.machine_ids),
                                       "full" if final else "assess")

    def _start(self, request: StartMachines, kind: str) -> Steps:
        started = StartedMachines.from_json((yield self._activity(START_MACHINES, request)))
        wave = self.state.grant.wave if kind == "change" else self.final_wave
        entries = [InFlight(s.instance_id, s.machine_id, kind, wave, attached=not s.started)
                   for s in (StartedMachine.from_json(x) for x in started.started)]
        state = self.state
        granted = _bump(state.granted, wave, len(entries)) if kind == "change" else state.granted
        self.state = replace(state, in_flight=[*state.in_flight, *entries], granted=granted)
        if entries:
            self._read_cadence(news=True)  # machines just started may end soon

    def _take_queued(self, count: int) -> Steps:
        """The next ``count`` machines queued for their wave, in the order of their records."""
        state = self.state
        records = yield self._activity(READ_RECORDS, RecordQuery(record_prefix(self.instance_id, "q:")))
        queued = [MachineDone.from_json(InstanceView.from_json(r).output).machine_id for r in records]
        taken = queued[state.queue_taken:state.queue_taken + count]
        self.state = replace(state, queue_taken=state.queue_taken + len(taken))
        return taken

    # --- what comes back ----------------------------------------------------------------------------------

    @property
    def starts_left(self) -> bool:
        """More machines to start right away than one batch took."""
        state = self.state
        free = self.policy.concurrency - len(state.in_flight)
        allowed = self.queued_waiting if state.final else max(0, state.grant.budget - self.grants_started)
        return not state.halted and free > 0 and (min(allowed, self.queued_waiting) > 0 or not state.cursor.done)

    def next_poll(self) -> datetime:
        if self.starts_left:
            return self.now + timedelta(seconds=START_BATCH_S)
        if not self.state.in_flight:
            poll = self.now + timedelta(seconds=WINDOW_IDLE_POLL_S)
        else:
            poll = next_read(self.policy, self.now, self.state.poll_s or POLL_S)
        if self.state.deferred and not self.state.halted:  # wake when the first one is due again
            poll = min(poll, max(self.now + timedelta(seconds=1), min(parse_utc(d[1]) for d in self.state.deferred)))
        return poll

    def poll(self) -> Steps:
        """Read the outcomes recorded since the last poll and the rollout's word; look at the machines that may
        end without a record."""
        state = self.state
        since = parse_utc(state.seen_since)
        records, rollout = yield self.context.task_all([
            self._activity(READ_RECORDS, RecordQuery(
                record_prefix(self.instance_id), _iso(since - timedelta(seconds=RECORD_MARGIN_S)))),
            self._activity(READ_INSTANCES, [state.rollout_id]),
        ])
        self.state = replace(self.state, seen_since=_iso(self.now))
        in_flight = len(self.state.in_flight)
        outputs = [InstanceView.from_json(r).output for r in records]
        self._finished([MachineDone.from_json(output) for output in outputs
                        if isinstance(output, dict) and "row" in output])
        self._read_cadence(news=len(self.state.in_flight) < in_flight)
        (rollout_view,) = [InstanceView.from_json(r) for r in rollout]
        grants = (rollout_view.custom_status or {}).get("grants") if isinstance(rollout_view.custom_status, dict) \
            else None
        if isinstance(grants, dict) and str(state.index) in grants:
            self._apply_grant(Grant.from_json(grants[str(state.index)]))
        elif rollout_view.runtime_status in ("Completed", "Failed", "Terminated", None):
            self.state = replace(self.state, halted=True, halt_detail="the rollout is no longer running")
        yield from self._look()
        self._judge_guardrail()

    def _read_cadence(self, news: bool) -> None:
        poll_s, news_at = read_cadence(self.policy, self.now, self.state.poll_s, self.state.news_at, news)
        self.state = replace(self.state, poll_s=poll_s, news_at=news_at)

    def _apply_grant(self, grant: Grant) -> None:
        state = self.state
        self.state = replace(
            state, grant=grant if grant.wave >= state.grant.wave else state.grant,
            final=state.final or grant.final, halted=state.halted or grant.halted,
            halt_detail=grant.detail if grant.halted else state.halt_detail,
        )

    def _judge_guardrail(self) -> None:
        """Halt at once when this window's own newest escalations, with what the rollout knows of the others,
        already exceed the guardrail for the wave (the rollout halts everyone at its next read)."""
        state, grant = self.state, self.state.grant
        mine = state.escalated[grant.wave] if grant.wave < len(state.escalated) else 0
        left = self.queued_waiting or not state.cursor.done
        if left and not state.halted and guardrail_tripped(mine + grant.escalated_elsewhere, grant.size_hi,
                                                  self.policy.guardrail):
            self.state = replace(state, halted=True, halt_detail=(
                f"wave {grant.wave + 1}: {mine + grant.escalated_elsewhere} escalated, more than "
                f"{self.policy.guardrail:.0%} of at most {grant.size_hi} machines"))

    def _finished(self, dones: list[MachineDone]) -> None:
        """Take the machines in ``dones`` out of the window and count their outcomes (one pass over the machines
        in flight, however many ended: a poll may bring hundreds of records)."""
        if not dones:
            return
        state = self.state
        waiting: dict[tuple[str, bool], InFlight] = {}
        for flight in state.in_flight:
            waiting.setdefault((flight.instance_id, flight.kind == "assess"), flight)
        ended: set[int] = set()  # id() of the entries that ended
        rows: list[ReportRow] = []
        deferred, assessed, queued, changeable = list(state.deferred), state.assessed, state.queued, state.changeable
        granted, members_done, escalated = state.granted, state.members_done, state.escalated
        for done in dones:
            entry = waiting.pop((done.instance_id, done.assess_only), None)
            if entry is None:
                continue  # read before (records are read back a little), or from an earlier run of this machine
            ended.add(id(entry))
            # Report the machine under the id this window listed (another trigger may spell it differently).
            row = replace(done.row, id=entry.machine_id)
            escalation = int(row.state == FinalState.ESCALATED.value)
            if done.deferred and not entry.attached:
                deferred.append([entry.machine_id, _iso(self.now + timedelta(seconds=self.policy.disconnected_grace))])
                continue
            if entry.kind in ("assess", "full"):
                assessed += 1
            if entry.attached:
                # Someone else's run: its outcome is reported; it belongs to none of our waves, but a change run's
                # place in its wave is used up.
                if entry.kind == "change":
                    members_done = _bump(members_done, entry.wave)
                    escalated = _bump(escalated, entry.wave, escalation)
            elif done.queued:
                queued, changeable = queued + 1, changeable + 1
                continue
            elif entry.kind == "change" or (entry.kind == "full" and done.member):
                if entry.kind == "full":
                    changeable, granted = changeable + 1, _bump(granted, entry.wave)
                members_done = _bump(members_done, entry.wave)
                escalated = _bump(escalated, entry.wave, escalation)
            rows.append(row)
        if not ended:
            return
        self.state = replace(
            state, in_flight=[f for f in state.in_flight if id(f) not in ended], deferred=deferred,
            assessed=assessed, queued=queued, changeable=changeable, granted=granted, members_done=members_done,
            escalated=escalated, finished=state.finished.plus(rows) if rows else state.finished,
        )

    def _look(self) -> Steps:
        """Read the machines that may end without a record (someone else's; any, now and then, to reconcile)."""
        state = self.state
        reconcile = self.now >= parse_utc(state.reconciled_at) + timedelta(seconds=RECONCILE_S)
        attached_due = self.now >= parse_utc(state.looked_at) + timedelta(seconds=ATTACHED_POLL_S)
        targets = [f for f in state.in_flight if reconcile or (attached_due and f.attached)]
        if attached_due or reconcile:
            self.state = replace(state, looked_at=_iso(self.now),
                                 reconciled_at=_iso(self.now) if reconcile else state.reconciled_at)
        if not targets:
            return
        read = MachinesRead.from_json((yield self._activity(READ_MACHINE_WORKFLOWS, ReadMachines(
            [StartedMachine(f.machine_id, f.instance_id, True) for f in targets]))))
        by_id = {f.machine_id.lower(): f for f in targets}
        for row in read.rows:
            entry = by_id.get(row.id.lower())
            if entry is None:
                continue
            # It left no record of its own (someone else's run, or it died): the window records it.
            queued = row.reason == Reason.AWAITING_WAVE.value and entry.kind == "assess" and not entry.attached
            deferred = row.reason == Reason.AWAITING_RECHECK.value and not entry.attached
            done = MachineDone(entry.instance_id, entry.machine_id, replace(row, id=entry.machine_id),
                               member=queued or bool(row.actions), queued=queued, assess_only=entry.kind == "assess",
                               deferred=deferred)
            with contextlib.suppress(Exception):  # it exists already: the machine recorded it after all
                yield self._record(done.to_json(), outcome_record_id(
                    self.instance_id, queued, entry.instance_id, deferred))
            self._finished([done])

    # --- the end ------------------------------------------------------------------------------------------

    def close(self) -> Steps:
        """The end: a halted window records the machines it did not start as halted."""
        if self.state.halted:
            yield from self._halt_the_rest()
        progress = self.progress(done=True)
        self.context.set_custom_status({**self.status(), "progress": progress.to_json()})
        return progress.to_json()

    def _halt_the_rest(self) -> Steps:
        """Record as halted the machines queued for a wave that did not come, then every one not listed yet."""
        deferred, self.state = [d[0] for d in self.state.deferred], replace(self.state, deferred=[])
        for start in range(0, len(deferred), HALTED_PER_PAGE):
            yield from self._record_halted(deferred[start:start + HALTED_PER_PAGE])
        if self.queued_waiting:
            queued = yield from self._take_queued(self.queued_waiting)
            for start in range(0, len(queued), HALTED_PER_PAGE):
                yield from self._record_halted(queued[start:start + HALTED_PER_PAGE])
        where = Discovery(self.state.subscription_id, self.policy.resolved_arm_endpoint, self.policy.resource_group)
        while not self.state.cursor.done:
            listing = Listing.from_json((yield self._activity(
                LIST_MACHINES_FROM, ListingRequest(where, self.state.cursor, HALTED_PER_PAGE))))
            self.state = replace(self.state, cursor=listing.cursor)
            if listing.machine_ids:
                yield from self._record_halted(listing.machine_ids)

    def _record_halted(self, machine_ids: list[str]) -> Steps:
        rows = [ReportRow.halted(machine_id) for machine_id in machine_ids]
        page = self.state.halted_pages
        yield self._record(RecordPage(rows).to_json(), halted_record_id(self.instance_id, page))
        self.state = replace(self.state, halted_pages=page + 1, finished=self.state.finished.plus(rows))


def _bump(counters: list[int], index: int, by: int = 1) -> list[int]:
    """``counters`` with ``counters[index] += by`` (grown with zeros as needed)."""
    grown = list(counters) + [0] * max(0, index + 1 - len(counters))
    grown[index] += by
    return grown
