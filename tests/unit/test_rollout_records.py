"""What a rollout's records hold, read back as the report and the windows read them (SDK status objects)."""

from __future__ import annotations

from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from core.contracts import MachineDone, RecordPage, ReportRow
from orchestrators.triggers import rows_of_records

MACHINE = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.HybridCompute"
           "/machines/{}")


def done(name: str, **flags: bool) -> dict:
    row = ReportRow.halted(MACHINE.format(name))
    return MachineDone(f"i-{name}", MACHINE.format(name), row, member=True, **flags).to_json()


def status(input_value: object, output: object) -> DurableOrchestrationStatus:
    return DurableOrchestrationStatus(instanceId="r", runtimeStatus="Completed", input=input_value, output=output)


def test_rows_come_from_the_records_input_and_from_records_of_earlier_versions_output() -> None:
    page = RecordPage([ReportRow.halted(MACHINE.format("c"))]).to_json()
    records = [
        status(done("a"), None),  # this version: the record is the input
        status(None, done("b")),  # an earlier version's record: its output was its input
        status(page, None),
        status(done("q", queued=True), None),  # waits for its wave: not a final row
        status(done("d", deferred=True), None),  # read Disconnected: started again later
    ]
    assert [row["name"] for row in rows_of_records(records)] == ["a", "b", "c"]
