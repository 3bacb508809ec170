"""Errors a user can act on. The CLI turns any XDCError into a one-line message and exit code 2."""


class XDCError(Exception):
    """A problem with the user's input (config, paths, data), reported without a traceback."""


class ConfigError(XDCError):
    """An unknown key, a value of the wrong type, or a value out of range. `key` is the dotted config key it is
    about ('cluster.k_video'), when there is one, so a form can show the message on that key's field."""

    def __init__(self, message: str, *, key: str | None = None):
        super().__init__(message)
        self.key = key


class DataError(XDCError):
    """A dataset that cannot be read: missing path, broken split file, no usable media."""


class MediaError(XDCError):
    """One media file that cannot be used: corrupt, truncated, silent, without audio, or too short."""


class TrainingError(XDCError):
    """Training cannot go on (for example a non-finite loss); the run is marked failed with this message."""


def one_line(exc: BaseException) -> str:
    """An error as the one line a user reads: xdc's own errors are written for users; anything else keeps its type,
    which is most of what it says."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, XDCError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")
