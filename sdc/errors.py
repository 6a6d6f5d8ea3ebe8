"""Errors the sdc package raises for bad input.

Every error a user can cause (an unknown column, a missing file, a bad policy, a statistic the
policy does not allow, a hierarchy that does not nest) is an :class:`SdcError` with a one-line
message; the command line prints that line and exits non-zero.  Anything else is a bug.
"""


class SdcError(ValueError):
    """Bad input: the message is one clear line, fit to show a researcher."""


class PolicyError(SdcError):
    """A policy name, file or dict that does not follow the schema."""


class SourceError(SdcError):
    """A data source that cannot be read, or a column that is missing or of the wrong type."""


class TableSpecError(SdcError):
    """Table arguments that do not fit together (dimensions, hierarchy, statistic, policy)."""
