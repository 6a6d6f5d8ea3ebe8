"""Errors a data manager can act on.

Every failure the command line reports is an :class:`IngestError` with one line of text that
names the file, and where known the row and the column. Nothing else is shown (no traceback).
"""

from __future__ import annotations


class IngestError(Exception):
    """A problem with the input, the spec, the key or the store; nothing was written."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, line: int | None = None):
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = " ".join(self.message.split())  # one line, whatever the message held
        return (", ".join(where) + ": " + text) if where else text
