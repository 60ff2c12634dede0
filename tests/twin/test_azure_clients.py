"""The client factory: endpoints, credentials, api-version, clock-aware transport, per-thread caching."""

from __future__ import annotations

import threading
import time

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential

from arc_hotpatch.clocks import ScaledClock, VirtualClock, current_clock, install_clock
from arc_hotpatch.twin import FleetTwin, load_scenario
from core.azure_clients import (
    ArmConnection,
    ClockSleepingTransport,
    StaticTokenCredential,
    close_clients,
    hybrid_compute_client,
    subscription_client,
    transport_for,
)
from core.policy import Policy

from .helpers import MachineDriver, TwinHarness

SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"


def test_development_connection_uses_the_twin_and_a_static_token():
    connection = ArmConnection.for_endpoint("https://127.0.0.1:8080/", token="dev", ca_file="/tmp/twin-ca.pem")
    assert (connection.endpoint, connection.ca_file) == ("https://127.0.0.1:8080", "/tmp/twin-ca.pem")
    assert connection.credential_scopes == ["https://127.0.0.1:8080/.default"]
    assert isinstance(connection.credential, StaticTokenCredential)
    token = connection.credential.get_token(*connection.credential_scopes)
    assert token.token == "dev" and token.expires_on > time.time() + 600
    assert connection.credential.get_token_info("x").token == "dev"
    implicit = ArmConnection.for_endpoint("https://localhost:8080")
    assert isinstance(implicit.credential, StaticTokenCredential)  # loopback is always the twin


def test_one_connection_per_endpoint_and_token_so_clients_are_reused():
    # Activities build their connection on every call: they must get the same one (and clients) back.
    endpoint = "https://127.0.0.1:8081"
    first = ArmConnection.for_endpoint(endpoint, token="a")
    assert ArmConnection.for_endpoint(endpoint, token="a") is first
    assert ArmConnection.for_endpoint(endpoint, token="b") is not first
    again = ArmConnection.for_endpoint(endpoint, token="a")
    assert hybrid_compute_client(again, SUBSCRIPTION) is hybrid_compute_client(first, SUBSCRIPTION)
    production = Policy().resolved_arm_endpoint
    assert ArmConnection.for_endpoint(production) is ArmConnection.for_endpoint(production)  # one credential
    close_clients()


@pytest.mark.parametrize(
    ("cloud", "endpoint"),
    [
        ("AzureCloud", "https://management.azure.com"),
        ("AzureUSGovernment", "https://management.usgovcloudapi.net"),
        ("AzureChinaCloud", "https://management.chinacloudapi.cn"),
    ],
)
def test_production_connection_uses_default_azure_credential_and_the_cloud(cloud, endpoint):
    connection = ArmConnection.for_endpoint(Policy(cloud=cloud).resolved_arm_endpoint)
    assert isinstance(connection.credential, DefaultAzureCredential)
    assert connection.endpoint == endpoint
    assert connection.credential_scopes == [f"{endpoint}/.default"]


def test_bearer_tokens_go_over_tls_only_loopback_included():
    credential = StaticTokenCredential()
    for endpoint in ("https://127.0.0.1:1", "https://localhost:1", "https://management.azure.com"):
        ArmConnection(endpoint, credential)
    for endpoint in ("http://127.0.0.1:1", "http://localhost:1", "http://management.azure.com", "ftp://127.0.0.1",
                     "127.0.0.1:80"):
        with pytest.raises(ValueError, match="not an https URL: bearer tokens go over TLS only"):
            ArmConnection(endpoint, credential)


def test_clients_are_pinned_cached_per_thread_and_closable():
    connection = ArmConnection("https://127.0.0.1:9", StaticTokenCredential())
    client = hybrid_compute_client(connection, SUBSCRIPTION)
    assert client._config.api_version == "2025-01-13"
    assert client._config.credential_scopes == ["https://127.0.0.1:9/.default"]
    assert isinstance(client._client._pipeline._transport, ClockSleepingTransport)
    assert hybrid_compute_client(connection, SUBSCRIPTION) is client
    assert hybrid_compute_client(connection, SUBSCRIPTION.replace("1", "2")) is not client
    other_connection = ArmConnection("https://127.0.0.1:9", StaticTokenCredential())
    assert hybrid_compute_client(other_connection, SUBSCRIPTION) is not client
    subscriptions = subscription_client(connection)
    assert subscriptions._config.api_version == "2022-12-01" and subscription_client(connection) is subscriptions

    elsewhere: list[object] = []
    thread = threading.Thread(target=lambda: elsewhere.append(hybrid_compute_client(connection, SUBSCRIPTION)))
    thread.start()
    thread.join()
    assert elsewhere[0] is not client

    close_clients()
    assert hybrid_compute_client(connection, SUBSCRIPTION) is not client
    close_clients()


def test_bearer_tokens_never_leave_over_plain_http_to_other_hosts():
    client = hybrid_compute_client(ArmConnection("https://127.0.0.1:9", StaticTokenCredential()), SUBSCRIPTION)
    for url in ("http://example.com/subscriptions", "http://127.0.0.1:9/subscriptions"):  # no loopback exception
        with pytest.raises(ServiceRequestError, match="non-TLS"):
            client.send_request(HttpRequest("GET", url))
    close_clients()


def test_transport_sleeps_on_the_installed_clock(virtual_clock):
    transport = ClockSleepingTransport()
    wall, virtual = time.monotonic(), virtual_clock.now()
    transport.sleep(3600)  # the clock driver jumps the virtual clock
    assert (virtual_clock.now() - virtual).total_seconds() == 3600
    assert time.monotonic() - wall < 5


def test_loopback_services_are_reached_without_proxy_settings(monkeypatch):
    # A proxy in the environment applies to Azure, never to the twin or Azurite on this host.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert transport_for("https://127.0.0.1:8443").session.trust_env is False
    assert transport_for("http://localhost:10002/devstoreaccount1").session.trust_env is False
    remote = transport_for("https://management.azure.com")
    remote.open()
    assert remote.session.trust_env is True
    remote.close()
    client = hybrid_compute_client(ArmConnection("https://127.0.0.1:9", StaticTokenCredential()), SUBSCRIPTION)
    assert client._client._pipeline._transport.session.trust_env is False  # what the app's activities use
    close_clients()


def test_lro_polling_releases_a_virtual_clock_for_a_waiting_activity(contract):
    """Like the local durable host: the clock jumps only when no ``running()`` work is left.

    azure-core polls an LRO in a thread of its own; the activity blocked in ``result()`` would
    stay runnable forever. ``lro_polling`` polls in the
    caller's thread instead.
    """
    clock = VirtualClock()
    previous = install_clock(clock)
    records: list = []
    twin = FleetTwin(load_scenario({"groups": [{"machine": {"name": "m"}}]}), clock, response_observer=records.append)
    stop = threading.Event()

    def host_like_driver() -> None:
        while not stop.is_set():
            if clock.wait_idle(0.01) and (wakeup := clock.next_wakeup()) is not None:
                clock.advance_to(wakeup)

    outcome: dict[str, object] = {}
    try:
        twin.start()
        driver = threading.Thread(target=host_like_driver, daemon=True)
        driver.start()
        machine = MachineDriver(TwinHarness(twin, clock, records), "m")

        def activity() -> None:
            with clock.running():
                outcome["state"] = machine.run("readiness", {"RequestId": "a"}).properties.instance_view.execution_state
                outcome["profile"] = machine.enable_hotpatch().properties.provisioning_state

        worker = threading.Thread(target=activity, daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the LRO never finished: the virtual clock was never released"
        assert outcome == {"state": "Succeeded", "profile": "Succeeded"}
    finally:
        stop.set()
        twin.stop()
        install_clock(previous)
        close_clients()
    assert contract.all_problems(records) == []


def test_real_time_clocks_keep_the_sdks_own_poller_thread():
    previous = install_clock(ScaledClock(speed=1000))
    try:
        with FleetTwin(load_scenario({"groups": [{"machine": {"name": "m"}}]}), current_clock()) as twin:
            harness = TwinHarness(twin, current_clock(), [])  # type: ignore[arg-type]
            machine = MachineDriver(harness, "m")
            poller = machine.client.machine_run_commands.begin_create_or_update(
                "rg-arc-servers", "m", "r", machine.run_body("readiness", {"RequestId": "a"})
            )
            assert poller._thread is not None  # azure-core's background polling, as in Azure
            assert poller.result(timeout=30).properties.instance_view.execution_state == "Succeeded"
    finally:
        install_clock(previous)
        close_clients()
