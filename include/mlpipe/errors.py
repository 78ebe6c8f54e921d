"""Domain errors. Library errors are wrapped with context (``raise ... from exc``)."""

from __future__ import annotations


class MlpipeError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(MlpipeError):
    """The pipeline spec is malformed; the message names the file and each bad field."""


class SourceError(MlpipeError):
    """A source could not be read, or lacks what the spec says it has."""


class ValidationFailed(MlpipeError):
    """A partition failed its data-quality suite.

    ``failures`` holds one dict per failed rule (column, rule, unexpected count);
    ``report`` is the path of the full validation report, ``data_docs`` that of the
    day's Great Expectations Data Docs page (None when none was built).
    """

    def __init__(self, message: str, failures: list[dict], report: str, data_docs: str | None = None):
        super().__init__(message)
        self.failures = failures
        self.report = report
        self.data_docs = data_docs


class DaysFailed(MlpipeError):
    """Some days of a range (ingest, score, monitor) failed; the message names each day and its error."""


class BadRange(MlpipeError):
    """A range of days cannot be run as asked (its end before its start, a chunk under a day)."""


class PartitionMissing(MlpipeError):
    """A partition the step needs does not exist yet."""


class TrainingError(MlpipeError):
    """Training could not start or a variant could not be fitted."""


class RegistryError(MlpipeError):
    """A registry operation cannot be done as asked (unknown version, nothing to roll back to)."""


class NotFittedError(MlpipeError):
    """A model or preprocessor was used before ``fit``."""


class StorageError(MlpipeError):
    """The data root, an object store or a lock cannot be used as configured (a bad URL, no
    lock for a data root shared between hosts, a store that does not answer). It may be
    transient: a task's retries may outlive it."""


class AccessDenied(StorageError):
    """An object store refused our credentials: final, retrying cannot fix it."""
