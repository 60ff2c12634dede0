"""Secrets stay out of histories, durable status and logs (SPEC §6), over real HTTP against the served app.

A rollout is served with ``HOTPATCH_ESCALATION_WEBHOOK`` set to a URL with a secret in its query string and a
fleet where one machine escalates. Every orchestration history (the management API's ``showHistory`` and the
host's own store, every execution), every status and report response and every log line captured is searched
for the webhook URL, its secret and the host's keys: none is there, and the webhook still got its POST.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from tests.rig import Served, ServeFleet

OLD = "10.0.26100.4000"  # no licensing workaround: no reboot


class Webhook:
    """A tiny HTTP server on a free loopback port that keeps every POST (path with query, JSON body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append((self.path, json.loads(body or b"{}")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def management(served: Served, path: str, **params: str) -> Any:
    response = served.http.get(f"{served.base_url}/runtime/webhooks/durabletask/{path}",
                               params={"code": served.host.keys.durabletask_key, **params}, timeout=30)
    assert response.status_code in (200, 202), response.text
    return response


def test_the_webhook_url_and_keys_are_in_no_history_status_or_log_line(
    serve_fleet: ServeFleet, webhook: Webhook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    token = secrets.token_hex(12)
    url = f"http://127.0.0.1:{webhook.port}/hook?sig=S3CR3T{token}&sv=2026"
    served = serve_fleet({"a-enable-fails": {"enable_outcome": "fail", "os_version": OLD},
                          "b-fine": {"os_version": OLD}})
    monkeypatch.setenv("HOTPATCH_ESCALATION_WEBHOOK", url)  # the app setting, as the Functions host has it
    keys = served.host.keys

    texts: list[tuple[str, str]] = []  # (where, text) of everything a person or a log could see

    started = served.start_rollout({"waves": "100%"})
    assert started.status_code == 202, started.text
    texts.append(("start response", started.text))
    links = started.json()
    rollout_id = links["id"]
    # One call with the key in the x-functions-key header too: the access log must not show it either.
    report = served.call("GET", f"/api/rollouts/{rollout_id}/report", key=None,
                         headers={"x-functions-key": keys.function_key})
    assert report.status_code == 200, report.text

    final = served.wait_for_status_url(links["statusQueryGetUri"])
    assert final["runtimeStatus"] == "Completed", final
    report = served.call("GET", f"/api/rollouts/{rollout_id}/report")
    assert report.status_code == 200
    rows = {row["name"]: row for row in report.json()["machines"]}
    assert (rows["a-enable-fails"]["state"], rows["a-enable-fails"]["reason"]) == ("escalated", "enable_failed")
    texts.append(("report", report.text))

    # The webhook got the escalation, at the URL of the app setting (its secret query string included).
    assert [(path, body["reason"], body["machine_id"]) for path, body in webhook.received] == [
        (f"/hook?sig=S3CR3T{token}&sv=2026", "enable_failed", served.twin.resource_id("a-enable-fails"))]

    # Every instance, with its input, output, custom status and history, through the management API ...
    listed = management(served, "instances", showInput="true")
    texts.append(("instance list", listed.text))
    instance_ids = [status["instanceId"] for status in listed.json()]
    assert rollout_id in instance_ids and len(instance_ids) > 3
    for instance_id in instance_ids:
        status = management(served, f"instances/{instance_id}", showHistory="true", showHistoryOutput="true",
                            showInput="true")
        texts.append((f"status of {instance_id}", status.text))
        # ... and the host's own store: every execution's history (continue-as-new keeps earlier ones there).
        for number, history in enumerate(served.host.execution_histories(instance_id)):
            texts.append((f"history {number} of {instance_id}", json.dumps(history, default=str)))
    escalated = [text for where, text in texts if where.startswith("history") and '"escalate"' in text]
    assert escalated, "the escalation activity is in a history that was searched"

    log_lines = [record.getMessage() for record in caplog.records]
    access = [line for line in log_lines if '"GET /api/rollouts/' in line or '"POST /api/subscriptions/' in line]
    assert access and all("code=***" in line or "x-functions-key=***" in line for line in access), access
    assert any("x-functions-key=***" in line for line in access), "the header call was logged, redacted"
    assert any(line.startswith("escalation ") and "enable_failed" in line for line in log_lines)
    texts += [("log line", line) for line in log_lines]

    webhook_secrets = {"webhook URL": url, "webhook secret": f"S3CR3T{token}", "webhook path": "/hook?sig="}
    host_keys = {"function key": keys.function_key, "master key": keys.master_key}
    system_keys = {"durabletask key": keys.durabletask_key, "eventgrid key": keys.eventgrid_key}
    for where, text in texts:
        # The check-status links carry the durabletask system key by design (as on Azure); nothing else may.
        forbidden = webhook_secrets | host_keys | ({} if where.startswith(("start response", "status of"))
                                                     else system_keys)
        for name, value in forbidden.items():
            assert value not in text, f"the {name} is in the {where}"
