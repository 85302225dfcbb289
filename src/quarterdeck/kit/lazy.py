"""Package re-exports that import their module on first use.

Every ``quarterdeck`` command imports the package of each sub-command (``quarterdeck.gateway``
for ``quarterdeck.gateway.cli``), so a package ``__init__`` that imported its services eagerly
made ``quarterdeck version`` load FastAPI, asyncpg and Redis: over a second before anything ran.
A package keeps its public names (``from quarterdeck.gateway import is_gateway_path`` still
works) by listing them for type checkers under ``TYPE_CHECKING`` and answering them at run time
with the ``__getattr__`` (PEP 562) made here::

    if TYPE_CHECKING:
        from quarterdeck.gateway.errors import is_gateway_path

    __getattr__ = lazy_exports(__name__, {"quarterdeck.gateway.errors": ("is_gateway_path",)})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(package: str, exports: Mapping[str, Iterable[str]]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: each name in ``exports[module]`` is imported
    from ``module`` when first asked for, then kept on the package so the next look-up is a
    plain attribute. Any other name is an :class:`AttributeError`, which is also what lets
    ``from package import submodule`` fall through to importing the submodule."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
