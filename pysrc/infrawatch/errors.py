"""The one base of errors a user can act on: the CLI prints their message (which says what to do)
and exits 1, instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix; the message says how."""
