"""The errors a checkpoint on disk can raise: all are :class:`CheckpointError`, a ``ValueError``."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or uses an unsupported feature."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint exists at the given prefix or directory."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class TensorNotFoundError(CheckpointError, KeyError):
    """The checkpoint has no tensor of the requested name."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
