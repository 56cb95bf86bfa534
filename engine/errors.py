"""User-facing errors: each carries one clear sentence naming the problem and the way out.

Front ends print `str(err)` (CLI: an error line and a non-zero exit; TUI: a notification) and send the
traceback to the log only. Anything that is not a SmallGPTError is a bug and is reported as such.
"""


class SmallGPTError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class CorpusError(SmallGPTError):
    pass


class TokenizerError(SmallGPTError):
    pass


class ConfigError(SmallGPTError):
    pass


class CheckpointError(SmallGPTError):
    pass


class RunError(SmallGPTError):
    pass


class InteropError(SmallGPTError):
    """A model folder (Hugging Face format) that cannot be imported, or a run that cannot be exported."""
