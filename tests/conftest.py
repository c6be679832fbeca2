from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import AppServer

OFFLINE_VALUES = {"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "2"}


@pytest.fixture(scope="session")
def offline_app() -> Iterator[AppServer]:
    """The app on the local host with the offline model (fast pace)."""
    with AppServer(OFFLINE_VALUES, host={"CORS": "http://allowed.example"}) as server:
        yield server


@pytest.fixture
def offline_client(offline_app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=offline_app.url, timeout=30) as client:
        yield client
