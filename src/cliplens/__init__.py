"""cliplens: exact, streaming mechanistic interpretability of CLIP image encoders."""

__version__ = "0.1.0"

from .errors import CliplensError  # noqa: E402
from .lens import Lens  # noqa: E402
from .models.load import from_hf, from_openclip, load  # noqa: E402

__all__ = ["CliplensError", "Lens", "from_hf", "from_openclip", "load", "load_stats", "__version__"]


def load_stats(path, lens=None, **expect):
    """Read a statistics artifact written by `stats.save`; refuses one made for another model or setting."""
    from .stats.collect import load_stats as _load_stats

    return _load_stats(path, lens=lens, **expect)
