"""Optional extras: a feature whose packages are not installed stops before any work, naming what to install.

pyproject.toml's extras are `explain` (matplotlib, wordfreq, scikit-learn), `hf` (transformers), `segment` (h5py),
`cars` (scipy), `search` (faiss-cpu), `timm` (timm) and `browser` (playwright, for the test suite). This module sits
at the bottom of the package (it imports only `errors`), so any floor can declare what it needs.
"""

from __future__ import annotations

import importlib.util

from .errors import CliplensError


def require(extra: str, *modules: str, user: str) -> None:
    """Raise a one-line CliplensError ("`user` needs X: pip install 'cliplens[extra]'") if a module is missing.

    `find_spec` looks without importing, so the check costs nothing when the packages are there.
    """
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise CliplensError(f"{user} needs {' and '.join(missing)}: pip install 'cliplens[{extra}]'")
