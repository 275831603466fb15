import gc
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


# -- the cyclic collector's cost ------------------------------------------------------------
# Every CPU compile ends with a full ``gc.collect()`` (ember/devices/cpu/runtime/release.py), and
# a full collection walks every object of the process: after the whole suite is collected
# (torch, TensorFlow, OpenVINO, ORT, NNCF... imported) that is ~800,000 objects and ~0.25 s per
# collection, paid by each of the suite's thousands of compiles. The objects that exist once
# collection is over (modules, classes, test tables) live to the end, so they are moved to the
# permanent generation (``gc.freeze``), which collections skip; what tests create is still
# collected as before. At each change of test module the frozen set is released, collected and
# frozen again, so heavy libraries a module imported lazily stop being walked too, and cycles
# its fixtures left behind are still freed.
@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    yield  # module- and class-scoped fixtures are finalized inside
    if nextitem is None or nextitem.module is not getattr(item, "module", None):
        gc.unfreeze()
        gc.collect()
        gc.freeze()
