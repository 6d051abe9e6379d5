import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in models are built into a per-session cache, so tests never depend on what a user has cached."""
    old = os.environ.get("SFTMIX_CACHE")
    os.environ["SFTMIX_CACHE"] = str(tmp_path_factory.mktemp("sftmix-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield
    if old is None:
        os.environ.pop("SFTMIX_CACHE", None)
    else:
        os.environ["SFTMIX_CACHE"] = old
