"""The one exception type for expected failures: its message is the single line the user sees."""


class UserError(Exception):
    """Bad input or a missing prerequisite: name what is wrong and what to do, in one line."""
