"""The backend's one error type. Services raise it; the API turns it into LXD's error envelope."""


class ApiError(Exception):
    """An error with the HTTP status the client should see (LXD: error_code == HTTP status)."""

    status = 500

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self):
        return str(self)


class BadRequest(ApiError):
    status = 400


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    status = 412


class NotImplementedYet(ApiError):
    status = 501
