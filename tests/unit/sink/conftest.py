"""Fixtures of the sink tests: the real UserFluxClient, talking to the session's stand-in."""

from __future__ import annotations

import pytest

from connector.config.model import Secret
from connector.sink.client import UserFluxClient
from tests.conftest import API_KEY


@pytest.fixture(scope="module")
def client(standin_server):
    """The real client, as the connector builds it, shared by a module's tests (take
    ``standin`` too, so the stand-in is reset around the test)."""
    shared = UserFluxClient(standin_server.base_url, Secret(API_KEY), timeout_s=2.0, max_connections=4)
    yield shared
    shared.close()


@pytest.fixture
def make_client():
    """Builds extra clients (another key, URL, timeout or transport); closes them after the test."""
    clients = []

    def make(base_url: str, key: str = API_KEY, timeout_s: float = 2.0, transport=None,
             max_connections: int = 4) -> UserFluxClient:
        client = UserFluxClient(base_url, Secret(key), timeout_s=timeout_s, max_connections=max_connections,
                                transport=transport)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
