"""The one error type of the harness: something needed to build or boot a guest is missing."""


class SetupError(Exception):
    """The image cannot be built or QEMU cannot be started (not a scenario failure)."""
