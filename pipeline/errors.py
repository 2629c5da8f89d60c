"""One exception root for the package, so callers can catch everything we raise and nothing else."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A setting from the environment is missing or malformed; the message names the variable."""


class InvalidAddress(PipelineError):
    """The text is not a single IP address we accept; `reason` is short and stable (it goes to the DLQ)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadEvent(PipelineError):
    """An input record cannot be turned into an event; `reason` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerError(PipelineError):
    """The local Kafka broker could not be fetched, started or reached."""
