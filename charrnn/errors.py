"""One exception type for every problem a user can cause; only the CLI turns it into a message."""


class CharrnnError(Exception):
    """A user-facing error: the message is one clear line, shown without a traceback."""
