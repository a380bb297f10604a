"""TLS to UserFlux: verification against the default or a configured CA, and client
certificates."""

from __future__ import annotations

import pytest

from connector.config.model import TlsSettings
from connector.sink.outcome import DELIVERED, FATAL
from connector.sink.request import encode_batch
from connector.sink.tls import TlsFileError, ssl_context
from tests.conftest import API_KEY
from tests.support.fakes import sample_event
from tests.support.userflux_standin import UserFluxStandIn
from tests.unit.sink.conftest import new_client

BODY = encode_batch([sample_event(0)])


@pytest.fixture
def https(https_standin):
    https_standin.reset()
    yield https_standin
    https_standin.reset()


def post(url: str, tls: TlsSettings | None = None):
    client = new_client(url, timeout_s=5, tls=tls)
    try:
        return client.post_batch(BODY, False)
    finally:
        client.close()


def test_a_certificate_from_an_unknown_ca_is_refused_for_good(https):
    answer = post(https.base_url)
    assert (answer.kind, answer.code) == (FATAL, "tls")
    assert "certificate" in answer.detail and "CERTIFICATE_VERIFY_FAILED" in answer.detail
    assert https.requests() == []  # nothing was sent


def test_the_configured_ca_file_verifies_it(https, certs):
    answer = post(https.base_url, TlsSettings(ca_file=str(certs.ca)))
    assert answer.kind == DELIVERED
    assert https.events() == [sample_event(0)]


def test_a_client_certificate_is_presented_when_configured(certs):
    server_files = (str(certs.server_cert), str(certs.server_key))
    with UserFluxStandIn(api_key=API_KEY, tls=server_files, client_ca=str(certs.ca)) as server:
        without = post(server.base_url, TlsSettings(ca_file=str(certs.ca)))
        assert without.kind != DELIVERED
        with_cert = TlsSettings(
            ca_file=str(certs.ca), client_cert_file=str(certs.client_cert), client_key_file=str(certs.client_key)
        )
        assert post(server.base_url, with_cert).kind == DELIVERED
        assert len(server.events()) == 1


def test_unusable_files_name_the_setting(tmp_path, certs):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(TlsFileError) as info:
        ssl_context(TlsSettings(ca_file=str(tmp_path / "missing.pem")))
    assert info.value.key == "ca_file" and "No such file" in str(info.value)
    with pytest.raises(TlsFileError) as info:
        ssl_context(TlsSettings(ca_file=str(not_pem)))
    assert info.value.key == "ca_file"
    with pytest.raises(TlsFileError) as info:
        ssl_context(TlsSettings(client_cert_file=str(certs.client_cert), client_key_file=str(certs.server_key)))
    assert info.value.key == "client_cert_file" and "private key" in str(info.value)
