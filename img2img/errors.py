"""The one error type users see.

Library code raises :class:`UserError` for anything the user can fix (a bad
option, a missing or corrupt file).  The CLI turns it into a one-line message
with a non-zero exit and no traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, stated in one line that names the option or path."""
