from __future__ import annotations

import pytest

from harness.measure import registry

# The one definition of a CUDA-only test: ``@pytest.mark.cuda`` (registered in pyproject.toml;
# ``pytest -m cuda`` runs only these). Where torch sees no CUDA device they skip, with this reason.
CUDA_REASON = "needs a CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Items marked ``cuda`` skip with ``CUDA_REASON`` where there is no CUDA device."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch  # only where a CUDA test was collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_REASON)
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def fake_backends():
    """Register the misbehaving test backends for one test, then remove them again."""
    from tests.fake_backends import FAKES

    for cls in FAKES:
        registry.register(cls)
    yield {cls.name: cls for cls in FAKES}
    for cls in FAKES:
        registry._REGISTRY.pop(cls.name, None)
