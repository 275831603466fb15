"""OpenVINO ops, one module per family. Each module registers its ops and builders itself;
importing this package hands ``ember.graph.registry`` a loader that imports them all (on the
first registry lookup), so no list of ops is kept here and the graph layer never imports ops."""

import importlib
import pkgutil

from ember.graph.registry import add_op_loader


def _import_op_modules() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


add_op_loader(_import_op_modules)
