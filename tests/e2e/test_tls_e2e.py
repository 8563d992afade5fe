"""TLS (issue 17): every worker serves HTTPS only; an unusable certificate is one line, exit 2.

Certificates are made in the test with trustme. A renewed certificate on disk is served
by the workers a SIGHUP starts, without a restart.
"""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartSupervisor
from tests.supervisor_process import run_cli, wait_for

trustme = pytest.importorskip("trustme")
APP = "tests.apps.hello:app"


def issue(ca: object, directory: Path) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")  # type: ignore[attr-defined]
    certfile, keyfile = directory / "server.pem", directory / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


def peer_serial(port: int, context: ssl.SSLContext) -> int:
    from cryptography import x509

    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)

    return int(x509.load_der_x509_certificate(der or b"").serial_number)


def test_every_worker_serves_https_only_and_a_renewed_cert_follows_sighup(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    ca = trustme.CA()
    certfile, keyfile = issue(ca, tmp_path)
    sup = start_supervisor(APP, "-w", "2", "--ssl-certfile", certfile, "--ssl-keyfile", keyfile)
    workers = sup.wait_serving(2)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://127.0.0.1:{sup.port}/"
    with httpx.Client(verify=context, timeout=5, http1=True) as client:
        answered = {client.get(url, headers={"connection": "close"}).text for _ in range(40)}
    assert {int(pid) for pid in answered} == workers  # both workers speak TLS
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{sup.port}/", timeout=3)  # no plain-HTTP fallback
    assert f"Listening at https://127.0.0.1:{sup.port} (TLS)" in sup.log()

    before = peer_serial(sup.port, context)
    issue(ca, tmp_path)  # renewed in place, as certbot does
    sup.signal(signal.SIGHUP)
    wait_for(lambda: sup.serving_pids().isdisjoint(workers) and len(sup.serving_pids()) == 2, 30)
    assert peer_serial(sup.port, context) != before


def test_mutual_tls_refuses_a_client_without_a_certificate(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    ca = trustme.CA()
    certfile, keyfile = issue(ca, tmp_path)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    sup = start_supervisor(
        APP,
        *("--ssl-certfile", certfile, "--ssl-keyfile", keyfile),
        *("--ssl-ca-certs", str(tmp_path / "ca.pem"), "--ssl-cert-reqs", "2"),
    )
    sup.wait_serving(1)
    anonymous = ssl.create_default_context()
    ca.configure_trust(anonymous)
    with pytest.raises((httpx.HTTPError, ssl.SSLError)):
        httpx.get(f"https://127.0.0.1:{sup.port}/", verify=anonymous, timeout=5)
    client = ca.issue_cert("client@test")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    known = ssl.create_default_context()
    ca.configure_trust(known)
    known.load_cert_chain(str(tmp_path / "client.pem"))
    assert httpx.get(f"https://127.0.0.1:{sup.port}/", verify=known, timeout=5).status_code == 200


@pytest.mark.parametrize("problem", ["missing", "garbage", "key-only", "wrong-key"])
def test_an_unusable_certificate_is_one_line_and_exit_2(tmp_path: Path, problem: str) -> None:
    ca = trustme.CA()
    certfile, keyfile = issue(ca, tmp_path)
    if problem == "missing":
        args = ["--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", keyfile]
    elif problem == "garbage":
        Path(certfile).write_text("not a certificate\n")
        args = ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile]
    elif problem == "key-only":
        args = ["--ssl-keyfile", keyfile]
    else:
        other = ca.issue_cert("127.0.0.1")
        other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
        args = ["--ssl-certfile", certfile, "--ssl-keyfile", str(tmp_path / "other.key")]
    result = run_cli(APP, "--port", "0", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1 and ("TLS" in errors[0] or "ssl" in errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    assert "Listening" not in result.stderr
