"""The one error the local stack raises for a part that cannot be brought up."""


class StackError(RuntimeError):
    """The stack could not be brought up; the message says which part and why."""
