"""User-facing errors. Each message says what went wrong and what to do; the command-line
tools print them without a traceback. Anything else is a bug and keeps its traceback."""


class MixbenchError(Exception):
    """Base class of the errors a user can fix."""


class ConfigError(MixbenchError, ValueError):
    """A config value or name that cannot work (the message names the key)."""


class DatasetError(MixbenchError):
    """A dataset's files are unusable (corrupt, truncated, inconsistent)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset's files are not where the config says."""


class CheckpointError(MixbenchError, RuntimeError):
    """A checkpoint that is missing, unreadable, or from another experiment."""


class RunExistsError(MixbenchError, RuntimeError):
    """The run folder already holds a run and resume was not asked for."""


class NonFiniteLossError(MixbenchError, RuntimeError):
    """The training loss became NaN or infinite."""


class DistributedError(MixbenchError, RuntimeError):
    """A rank of a multi-process run failed; the others were stopped."""
