"""The emulator behaving like production Vast (protocol.md §9): HTTPS workers under a CA built
like Vast's root, a foreign-CA impostor, scale-to-zero cold workers with Vast's state names,
Error/Destroying workers, and network delays.

The clients here are plain httpx with the TLS context vast_llm would use, so these tests prove
the emulator, whatever the client does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests import loopback
from vast_llm._signing import load_public_key, verify
from vast_llm._tls import certificate_error, worker_ssl_context
from vast_llm.cli import main
from vast_llm.emulator import FAULTS, Emulator

pytest_plugins = ["pytester"]


def route(emu: Emulator, endpoint: str | None = None) -> dict[str, Any]:
    body = {"endpoint": endpoint or emu.endpoint, "api_key": emu.api_key, "cost": 16}
    answer: dict[str, Any] = loopback.post(emu.base_url + "/route/", json=body, timeout=10).json()
    return answer


def generate(client: httpx.Client, answer: dict[str, Any]) -> httpx.Response:
    body = {
        "auth_data": answer,
        "payload": {"inputs": "Hello", "parameters": {"max_new_tokens": 3}},
    }
    return client.post(answer["url"] + "/generate", json=body, timeout=10)


def wait_ready(emu: Emulator, endpoint: str | None = None, limit: float = 15.0) -> list[str]:
    """Poll /route/ until a worker is assigned; the statuses seen on the way, then its url."""
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        answer = route(emu, endpoint)
        if "url" in answer:
            return [*seen, answer["url"]]
        seen.append(answer["status"])
        time.sleep(0.02)
    raise AssertionError(f"no worker became ready; statuses seen: {seen}")


@pytest.fixture(scope="module")
def tls_emu() -> Any:
    with Emulator(tls=True, workers=2).serve() as emu:
        yield emu


@pytest.fixture
def emu(tls_emu: Emulator) -> Any:
    tls_emu.reset()
    yield tls_emu
    tls_emu.reset()


# -- HTTPS workers ------------------------------------------------------------------------------


def test_workers_speak_https_and_the_router_http(emu: Emulator) -> None:
    assert emu.base_url.startswith("http://127.0.0.1:")
    assert all(url.startswith("https://127.0.0.1:") for url in emu.worker_urls())
    answer = route(emu)
    assert answer["url"] in emu.worker_urls()
    assert verify(load_public_key(emu.public_key_pem), answer, ("g3",)) == "g3"  # https signed
    with httpx.Client(verify=worker_ssl_context(emu.worker_ca)) as client:
        response = generate(client, answer)
    assert response.status_code == 200 and response.json()["generated_text"]
    assert len(emu.worker_requests) == 1


def test_the_worker_ca_is_shaped_like_vasts_and_fresh_per_emulator(emu: Emulator) -> None:
    assert emu.worker_ca is not None
    ca = x509.load_pem_x509_certificate(emu.worker_ca.encode())
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    names = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert names.critical and [str(n.value) for n in names.value.permitted_subtrees or []] == [
        "0.0.0.0/0"
    ]
    assert Emulator(tls=True).worker_ca != emu.worker_ca
    assert Emulator().worker_ca is None


def test_a_client_trusting_another_ca_is_refused_before_any_byte(emu: Emulator) -> None:
    # Vast's bundled root does not vouch for the emulator's workers.
    with (
        httpx.Client(verify=worker_ssl_context()) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        generate(client, route(emu))
    cause = certificate_error(info.value)
    assert cause is not None and cause.verify_code == 20
    assert not emu.worker_requests


def test_a_plain_http_client_gets_nothing(emu: Emulator) -> None:
    answer = route(emu)
    with httpx.Client() as client, pytest.raises(httpx.TransportError):
        generate(client, {**answer, "url": answer["url"].replace("https://", "http://")})
    assert not emu.worker_requests


def test_the_ca_file_lives_as_long_as_the_emulator() -> None:
    emu = Emulator(tls=True)
    assert emu.worker_ca_file is None
    with emu.serve():
        path = emu.worker_ca_file
        assert path is not None
        with open(path) as handle:
            assert handle.read() == emu.worker_ca
        directory = os.path.dirname(path)
        assert os.stat(directory).st_mode & 0o077 == 0  # private to this user
        with httpx.Client(verify=worker_ssl_context(path)) as client:
            assert generate(client, route(emu)).status_code == 200
    assert not os.path.exists(directory)


def test_in_process_mode_stays_plain_http() -> None:
    emu = Emulator(tls=True)
    emu.asgi_transport()
    assert all(url.startswith("http://worker-") for url in emu.worker_urls())
    assert emu.worker_ca is not None


# -- the foreign_ca impostor --------------------------------------------------------------------


def test_foreign_ca_impostor_receives_nothing_from_a_verifying_client(emu: Emulator) -> None:
    emu.inject("foreign_ca")
    answer = route(emu)
    assert answer["url"].startswith("https://127.0.0.1:")
    assert answer["url"] not in emu.worker_urls()
    assert verify(load_public_key(emu.public_key_pem), answer, ("g3",)) == "g3"  # signed as is
    with httpx.Client(verify=worker_ssl_context(emu.worker_ca)) as client:
        with pytest.raises(httpx.ConnectError) as info:
            generate(client, answer)
        cause = certificate_error(info.value)
        assert cause is not None and cause.verify_code == 20
        assert generate(client, route(emu)).status_code == 200  # the fault struck once
    assert not emu.impostor_requests and len(emu.worker_requests) == 1


def test_the_impostor_records_what_a_careless_client_sends(emu: Emulator) -> None:
    emu.inject("foreign_ca")
    with httpx.Client(verify=False) as careless:  # noqa: S501 - the point of this test
        response = generate(careless, route(emu))
    assert response.status_code == 500 and "impostor" in response.text
    (seen,) = emu.impostor_requests
    assert seen.path == "/generate" and b"Hello" in seen.body
    assert not emu.worker_requests


def test_foreign_ca_needs_tls() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        Emulator(faults=["foreign_ca"])
    with Emulator().serve() as emu, pytest.raises(ValueError, match="tls=True"):
        emu.inject("foreign_ca")


def test_foreign_ca_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert "foreign_ca" in FAULTS
    assert main(["emulator", "--list-faults"]) == 0
    assert "foreign_ca" in capsys.readouterr().out


# -- scale to zero ------------------------------------------------------------------------------


def test_cold_workers_wake_on_route_and_show_vasts_states() -> None:
    with Emulator(cold_workers=True, activation_delay=0.4, workers=2).serve() as emu:
        now = time.monotonic()
        assert [w.state(now) for w in emu.workers] == ["stopped", "stopped"]
        first = route(emu)
        assert first["status"] == "no worker ready (2 Stopped)"  # what this call found
        *statuses, url = wait_ready(emu)
        assert url == emu.worker_urls()[0]
        assert "no worker ready (1 Starting, 1 Stopped)" in statuses
        assert "no worker ready (1 Model Loading, 1 Stopped)" in statuses
        # One worker woke; the other stays cold while one is enough.
        assert emu.workers[1].state(time.monotonic()) == "stopped"
        with httpx.Client() as client:
            assert generate(client, route(emu)).status_code == 200


def test_scale_to_zero_again_and_per_endpoint_settings() -> None:
    emu = Emulator(workers=1, activation_delay=0.1)
    emu.add_endpoint("cold-ep", workers=1, cold_workers=True, activation_delay=0.1)
    with emu.serve():
        assert "url" in route(emu)  # the default endpoint is warm
        assert route(emu, "cold-ep")["status"] == "no worker ready (1 Stopped)"
        wait_ready(emu, "cold-ep")
        emu.scale_to_zero("cold-ep")
        emu.scale_to_zero()
        assert route(emu)["status"] == "no worker ready (1 Stopped)"
        assert wait_ready(emu)[-1] == emu.worker_urls(emu.endpoint)[0]
        assert route(emu, "cold-ep")["status"] == "no worker ready (1 Stopped)"


def test_a_stopped_endpoint_is_not_a_cold_worker() -> None:
    with Emulator(cold_workers=True, activation_delay=0.0).serve() as emu:
        emu.set_stopped(True)
        for _ in range(3):
            assert route(emu)["status"] == "endpoint stopped"
        assert emu.workers[0].state(time.monotonic()) == "stopped"  # nothing was woken
        emu.set_stopped(False)
        assert route(emu)["status"] == "no worker ready (1 Stopped)"
        assert "url" in route(emu)


def test_cold_start_still_works_with_vasts_names() -> None:
    with Emulator(cold_start=0.3).serve() as emu:
        statuses = wait_ready(emu)[:-1]
        assert statuses and all(
            re.fullmatch(r"no worker ready \(1 (Creating|Loading|Model Loading)\)", s)
            for s in statuses
        )


def test_error_and_destroying_workers() -> None:
    with Emulator(workers=2).serve() as emu:
        emu.set_worker_state(0, "error")
        assert all(route(emu)["url"] == emu.worker_urls()[1] for _ in range(3))
        emu.set_worker_state(1, "destroying")
        assert route(emu)["status"] == "no worker ready (1 Destroying, 1 Error)"
        emu.set_worker_state(1, None)
        assert route(emu)["url"] == emu.worker_urls()[1]
        emu.reset()
        assert route(emu)["url"] == emu.worker_urls()[0]  # the least loaded, back in service
        with pytest.raises(ValueError, match="state"):
            emu.set_worker_state(0, "exploded")


# -- network delays -----------------------------------------------------------------------------


def test_delays_are_added_to_router_and_worker_answers() -> None:
    # Lower bounds only: a sleep never ends early, while an upper bound would measure the machine.
    with (
        Emulator(router_delay=0.15, worker_delay=0.25, jitter=0.2).serve() as emu,
        httpx.Client() as client,
    ):
        started = time.perf_counter()
        answer = route(emu)
        routed = time.perf_counter() - started
        payload = {"inputs": "Hello", "parameters": {"max_new_tokens": 2}}
        started = time.perf_counter()
        with client.stream(
            "POST",
            answer["url"] + "/generate_stream",
            json={"auth_data": answer, "payload": payload},
        ) as stream:
            headers_after = time.perf_counter() - started
            assert stream.status_code == 200 and b"data:" in stream.read()
    assert routed >= 0.15 * 0.8 - 0.005
    assert headers_after >= 0.25 * 0.8 - 0.005


def test_delay_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Emulator(jitter=1.5)
    with pytest.raises(ValueError, match="router_delay"):
        Emulator(router_delay=-1)
    with pytest.raises(ValueError, match="activation_delay"):
        Emulator(activation_delay=-0.1)


# -- the command and the pytest plugin ----------------------------------------------------------


def test_emulator_command_with_tls_and_cold_workers() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vast_llm.cli",
            "emulator",
            "--tls",
            "--cold-workers",
            "--activation-delay",
            "0.1",
            "--worker-delay",
            "0.01",
            "--jitter",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while len(found) < 4 and time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            match = re.match(r"export (VAST_\w+)=(\S+)", line)
            if match:
                found[match.group(1)] = match.group(2)
        assert set(found) == {"VAST_BASE_URL", "VAST_ENDPOINT", "VAST_API_KEY", "VAST_WORKER_CA"}
        body = {"endpoint": found["VAST_ENDPOINT"], "api_key": found["VAST_API_KEY"], "cost": 1}
        answer: dict[str, Any] = {}
        for _ in range(200):
            answer = loopback.post(found["VAST_BASE_URL"] + "/route/", json=body).json()
            if "url" in answer:
                break
            assert (
                "Stopped" in answer["status"]
                or "Starting" in answer["status"]
                or ("Model Loading" in answer["status"])
            )
            time.sleep(0.02)
        with httpx.Client(verify=worker_ssl_context(found["VAST_WORKER_CA"])) as client:
            assert generate(client, answer).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 0


def test_plugin_sets_vast_worker_ca_for_tls_emulators(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAST_WORKER_CA", "/some/outside/ca.pem")
    pytester.makeconftest('pytest_plugins = ["vast_llm.testing"]')
    pytester.makepyfile(
        """
        import os
        import httpx
        import pytest
        from vast_llm._tls import worker_ssl_context

        @pytest.mark.vast_emulator(tls=True)
        def test_tls(vast_emulator):
            ca = os.environ["VAST_WORKER_CA"]
            assert ca == vast_emulator.worker_ca and ca.startswith("-----BEGIN CERTIFICATE")
            body = {"endpoint": os.environ["VAST_ENDPOINT"],
                    "api_key": os.environ["VAST_API_KEY"], "cost": 1}
            answer = httpx.post(os.environ["VAST_BASE_URL"] + "/route/", json=body).json()
            payload = {"auth_data": answer, "payload": {"inputs": "hi"}}
            with httpx.Client(verify=worker_ssl_context(ca)) as client:
                assert client.post(answer["url"] + "/generate", json=payload).status_code == 200

        def test_plain(vast_emulator):
            assert "VAST_WORKER_CA" not in os.environ
        """
    )
    # In-process and with no other plugins (as tests/emulator/test_plugin.py runs them).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
