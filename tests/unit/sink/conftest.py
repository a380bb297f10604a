"""Fixtures of the sink tests: the real UserFluxClient, talking to the session's stand-in."""

from __future__ import annotations

import pytest

from connector.config.model import Secret, TlsSettings
from connector.sink.client import UserFluxClient, make_route
from tests.conftest import API_KEY


def new_client(
    base_url: str, key: str = API_KEY, timeout_s: float = 2.0, tls: TlsSettings | None = None
) -> UserFluxClient:
    """A client as the connector builds one (pipeline.py)."""
    return UserFluxClient(make_route(base_url, Secret(key), timeout_s, tls))


@pytest.fixture(scope="module")
def client(standin_server):
    """The real client, as the connector builds it, shared by a module's tests (take
    ``standin`` too, so the stand-in is reset around the test)."""
    shared = new_client(standin_server.base_url)
    yield shared
    shared.close()


@pytest.fixture
def make_client():
    """Builds extra clients (another key, URL, timeout or TLS); closes them after the test."""
    clients = []

    def make(
        base_url: str, key: str = API_KEY, timeout_s: float = 2.0, tls: TlsSettings | None = None
    ) -> UserFluxClient:
        client = new_client(base_url, key, timeout_s, tls)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
