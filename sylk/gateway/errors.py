"""Errors that cross layers."""


class APIError(Exception):
    """A request cannot be carried out; the text is sent to the browser as the error reason."""


class BackendUnavailable(Exception):
    """The SIP backend (Janus) cannot be used right now."""
