"""Whether a path the user typed names a file or a folder, asked so that it cannot fail.

`Path.is_file()` and `Path.is_dir()` raise (before Python 3.12) for a name the operating system cannot even look up,
such as one longer than 255 bytes; for a user's path that only means "no such file".
"""

from __future__ import annotations

import os
from pathlib import Path


def is_file(path: str | os.PathLike) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long to look up, or one with a NUL byte
        return False


def is_dir(path: str | os.PathLike) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False
