"""The one exception type the CLI turns into a red line plus a hint."""


class EdgeticketError(Exception):
    """A user-facing error: what went wrong, and how to fix the input."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class NeedsPickle(EdgeticketError):
    """A checkpoint that only pickle can read (it stores Python objects): refused unless the user trusts it. The
    CLI gives a command without --trust-pickle another hint."""
