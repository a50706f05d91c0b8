"""Load user-supplied pickles (the CIFAR "python version") without running their code.

``pickle.load`` calls whatever callable a file names, so a file dropped into ``data_dir``
could run ``os.system``. CIFAR batches only need dicts, lists, bytes and numpy arrays,
so the unpickler resolves exactly the globals that numpy's array pickling emits (for
numpy 1 and 2 module names, protocols 2 to 5) and refuses everything else.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 moved numpy.core to numpy._core (old pickles still name numpy.core)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_NUMPY: dict[tuple[str, str], Any] = {
    ("multiarray", "_reconstruct"): _multiarray._reconstruct,  # ndarray, protocols 2-4
    ("multiarray", "scalar"): _multiarray.scalar,  # numpy scalars
    ("numeric", "_frombuffer"): _numeric._frombuffer,  # ndarray, protocol 5
}

#: (module, name) -> object. Nothing here can import modules or run commands.
ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (f"{package}.{module}", name): obj
        for package in ("numpy.core", "numpy._core")
        for (module, name), obj in _NUMPY.items()
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2.
    ("_codecs", "encode"): _codecs.encode,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside ``ALLOWED``."""


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only answers from ``ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        key = ("builtins" if module == "__builtin__" else module, name)  # Python 2 pickles
        if key not in ALLOWED:
            raise UnsafePickleError(f"global {module}.{name} is not allowed")
        return ALLOWED[key]


def load_restricted(path: Path) -> Any:
    """Unpickle ``path`` like torchvision (``encoding='latin1'`` for Python 2 batches),
    allowing only numpy arrays and plain containers."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding="latin1").load()
