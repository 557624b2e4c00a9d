"""The one exception type for mistakes a user can make (bad config, space, budget, study...)."""

from __future__ import annotations


class ConvspaceError(ValueError):
    """A user error: the message names the field and what is allowed; the CLI prints it on one line."""
