"""The one exception type users see: a single actionable line, never a traceback."""


class CliplensError(Exception):
    """A problem with the user's input or environment, explained in one line that says what to do."""
