"""A remote engine over TLS, as production's builders and GPU hosts are reached: the
certificates come from the connection as PEM text (no worker has files of its own), the
CLI and the SDK both use them, and a tcp:// engine without TLS is refused unless the
connection says so."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from include.nightly_ci.errors import EngineConfigError
from include.nightly_ci.images.engine import cli_environment, engine_client, engine_target
from tests.services import DOCKER_CLI, ScratchEngine, free_port

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path, name: str) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=folder)  # fmt: skip
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                     ("client", "extendedKeyUsage=clientAuth")):  # fmt: skip
        (folder / f"{who}.ext").write_text(ext + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", f"{who}-key.pem",
                "-out", f"{who}.csr", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}-cert.pem", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def tls_engine():
    pki = Path(tempfile.mkdtemp(prefix="nci-pki-"))
    make_pki(pki, "engine")
    port = free_port()
    engine = ScratchEngine("tls", extra_args=(
        "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(pki / "ca.pem"),
        "--tlscert", str(pki / "server-cert.pem"), "--tlskey", str(pki / "server-key.pem"),
    ))  # fmt: skip
    engine.start()
    yield port, pki
    engine.stop()
    subprocess.run(["rm", "-rf", str(pki)], check=False)


def connection(monkeypatch, conn_id: str, port: int, **extra) -> None:
    body = {"conn_type": "docker", "host": f"tcp://127.0.0.1:{port}", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(body))


def pem(pki: Path) -> dict[str, str]:
    return {
        "tls_ca_cert": (pki / "ca.pem").read_text(),
        "tls_client_cert": (pki / "client-cert.pem").read_text(),
        "tls_client_key": (pki / "client-key.pem").read_text(),
    }


def test_the_sdk_and_the_cli_reach_a_tls_engine_with_pem_from_the_connection(monkeypatch, tls_engine, tmp_path):
    port, pki = tls_engine
    # A worker that trusts the system CAs for other traffic: requests would let these
    # override the engine's own CA (psf/requests#3829).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    connection(monkeypatch, "builder_tls", port, **pem(pki))
    assert engine_client("builder_tls").ping()
    env = cli_environment("builder_tls", [], str(tmp_path))
    assert env["DOCKER_TLS_VERIFY"] == "1" and (Path(env["DOCKER_CERT_PATH"]) / "key.pem").stat().st_mode & 0o077 == 0
    info = subprocess.run(
        [DOCKER_CLI, "info", "--format", "{{.ServerVersion}}"], env=env, capture_output=True, text=True
    )
    assert info.returncode == 0 and info.stdout.strip(), info.stderr


def test_a_certificate_of_another_ca_is_refused_by_the_engine(monkeypatch, tls_engine, tmp_path):
    port, _ = tls_engine
    other = tmp_path / "other"
    other.mkdir()
    make_pki(other, "other")
    connection(monkeypatch, "builder_wrong_ca", port, **pem(other))
    with pytest.raises(EngineConfigError, match="TLS handshake failed"):
        engine_client("builder_wrong_ca").ping()


def test_tcp_without_tls_is_refused_unless_the_connection_says_so(monkeypatch, tls_engine):
    port, pki = tls_engine
    connection(monkeypatch, "builder_plain", port)
    with pytest.raises(
        EngineConfigError, match=r"engine connection 'builder_plain' is tcp://127\.0\.0\.1:\d+ without TLS"
    ):
        engine_target("builder_plain")
    connection(monkeypatch, "builder_plain", port, allow_insecure=True)
    assert engine_target("builder_plain").tls == {}
    connection(monkeypatch, "builder_paths", port, tls_ca_cert=str(pki / "ca.pem"))
    with pytest.raises(EngineConfigError, match="must hold the PEM text itself"):
        engine_target("builder_paths")


def test_half_a_tls_setup_or_an_unchecked_certificate_is_refused(monkeypatch, tls_engine):
    """The provider would talk plain HTTP with only a CA (M6)."""
    port, pki = tls_engine
    connection(monkeypatch, "builder_ca_only", port, tls_ca_cert=pem(pki)["tls_ca_cert"])
    with pytest.raises(EngineConfigError, match="missing tls_client_cert, tls_client_key"):
        engine_target("builder_ca_only")
    connection(monkeypatch, "builder_noverify", port, tls_verify=False, **pem(pki))
    with pytest.raises(EngineConfigError, match='"tls_verify": false'):
        engine_target("builder_noverify")
    connection(monkeypatch, "builder_noverify", port, tls_verify=False, allow_insecure=True, **pem(pki))
    assert engine_client("builder_noverify").ping()


def test_an_http_url_or_the_tls_port_without_certificates_is_refused(monkeypatch, tls_engine):
    """M6: http:// is plain HTTP as much as tcp:// is; a host on 2376 (the TLS port) with
    no certificates would be too. Each is refused, naming the connection and what is missing."""
    port, _ = tls_engine
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUILDER_HTTP", json.dumps({"conn_type": "docker", "host": f"http://127.0.0.1:{port}"})
    )
    with pytest.raises(EngineConfigError, match=r"'builder_http' is http://127\.0\.0\.1:\d+ without TLS.*tls_ca_cert"):
        engine_target("builder_http")
    monkeypatch.setenv(
        "AIRFLOW_CONN_BUILDER_2376", json.dumps({"conn_type": "docker", "host": "127.0.0.1", "port": 2376})
    )
    with pytest.raises(EngineConfigError, match=r"'builder_2376' is tcp://127\.0\.0\.1:2376 without TLS"):
        engine_target("builder_2376")


def test_an_engine_allowed_without_tls_or_verification_is_warned_about_loudly(monkeypatch, tls_engine, caplog):
    """allow_insecure is a choice, not a silence: every use says what crosses the network."""
    port, pki = tls_engine
    connection(monkeypatch, "builder_insecure", port, allow_insecure=True)
    with caplog.at_level("WARNING"):
        engine_target("builder_insecure")
    assert re.search(r"engine connection 'builder_insecure' .*without TLS.*registry credentials", caplog.text)
    caplog.clear()
    connection(monkeypatch, "builder_noverify", port, tls_verify=False, allow_insecure=True, **pem(pki))
    with caplog.at_level("WARNING"):
        engine_target("builder_noverify")
    assert re.search(r"engine connection 'builder_noverify'.*certificate is not checked", caplog.text)
