"""cliplens: exact, streaming mechanistic interpretability of CLIP image encoders.

The package root only re-exports the public surface; everything lives in the floors below (see the architecture page
of the docs), and nothing below imports the root.
"""

from .errors import CliplensError
from .factory import from_hf, from_openclip, load
from .lens import Lens
from .stats.collect import load_stats
from .version import __version__

__all__ = ["CliplensError", "Lens", "from_hf", "from_openclip", "load", "load_stats", "__version__"]
