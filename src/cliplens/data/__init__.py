"""Image sources and the batch loop every streaming pass shares.

May import: shapes, io and the leaves (errors, version).
"""

from .folders import ImageFolder
from .loader import Batch, LoadReport, batches, as_source

__all__ = ["Batch", "ImageFolder", "LoadReport", "as_source", "batches"]
