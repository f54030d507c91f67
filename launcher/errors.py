"""The launcher's one error type: a message for the user, printed without a traceback."""


class LauncherError(Exception):
    """Something the user can fix; the message says what and how."""
