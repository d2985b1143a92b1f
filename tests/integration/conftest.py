from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import BASE_CONFIG, GatewayProcess, start_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A `voicegw serve` process on free loopback ports with the base test config."""
    gw = start_gateway(tmp_path, BASE_CONFIG)
    try:
        yield gw
    finally:
        gw.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
