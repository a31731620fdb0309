"""Errors of the Grafana commands a user can act on."""

from infrawatch.errors import UserError


class CheckError(UserError):
    """The provisioned files are inconsistent; the lines printed before say where."""
