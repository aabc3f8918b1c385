"""One way to report an exception on one line: converter, runtime and database errors run to pages, and a
summary, a trial's failure reason or a model card holds one line.

It lives in the bottom package, which every other imports and which imports nothing heavy.
"""

from __future__ import annotations


def error_line(error: BaseException, *, typed: bool = False) -> str:
    """The first line of `error`'s message, or its type's name where the message is empty; `typed` puts the
    type's name first ("ValueError: bad value"), for reports that keep what kind of failure it was."""
    message = str(error).strip()
    first = message.splitlines()[0] if message else ""
    name = type(error).__name__
    if typed:
        return f"{name}: {first}" if first else name
    return first or name
