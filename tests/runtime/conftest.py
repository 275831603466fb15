import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _quiet_ember_logger():
    """A test that sets LOG_LEVEL must not leave the ember logger loud for the next one."""
    yield
    logger = logging.getLogger("ember")
    logger.setLevel(logging.NOTSET)
    import ember.runtime.core as core

    if core._HANDLER is not None:
        logger.removeHandler(core._HANDLER)
        core._HANDLER = None
