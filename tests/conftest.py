from __future__ import annotations

import pytest

from harness.measure import registry


@pytest.fixture
def fake_backends():
    """Register the misbehaving test backends for one test, then remove them again."""
    from tests.fake_backends import FAKES

    for cls in FAKES:
        registry.register(cls)
    yield {cls.name: cls for cls in FAKES}
    for cls in FAKES:
        registry._REGISTRY.pop(cls.name, None)
