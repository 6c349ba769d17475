"""Package faces that import on first use: `import surrogate_nas.search` must not pull
in TensorFlow, pymoo or scikit-learn before a name from them is needed (CLI `--help` is
instant), yet every public name stays one attribute away."""

from __future__ import annotations

import importlib
import sys


def lazy_face(package: str, exports: dict[str, list[str]]):
    """`(__getattr__, __dir__, __all__)` for a package whose public names live in its
    submodules: `exports` maps submodule -> names."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
