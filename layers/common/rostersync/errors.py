"""Typed errors. The API maps them to HTTP answers in one place."""

from __future__ import annotations


class RostersyncError(Exception):
    """Base class. `code` is the machine-readable name used in API errors."""

    code = "error"
    http_status = 500


class BadRequestError(RostersyncError):
    code = "bad_request"
    http_status = 400


class NotFoundError(RostersyncError):
    code = "not_found"
    http_status = 404


class RunActiveError(RostersyncError):
    code = "run_active"
    http_status = 409

    def __init__(self, run_id: str) -> None:
        super().__init__(f"a run is already active for this district: {run_id}")
        self.run_id = run_id


class SettingsError(RostersyncError):
    """A settings document that does not validate. The message names the key."""

    code = "invalid_settings"
    http_status = 400


class SourceError(RostersyncError):
    """The source could not be read to the end: the run fails and deletes nothing."""

    code = "source_error"
    http_status = 502


class FilterNotSupportedError(SourceError):
    """The source refused the dateLastModified filter of an incremental run."""

    code = "filter_not_supported"
