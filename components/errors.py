"""Errors the pipeline's own components raise when the data, not the code, is at fault.

A component that raises `BadDataError` stops the run as bad input (exit 2); any other exception
from a component is a failure of ours (exit 1, trace in the log).
"""


class BadDataError(RuntimeError):
    """The data cannot be trained on as it is (schema anomalies, drift): the message says what and how to go on."""


def bad_data_behind(err: BaseException):
    """The BadDataError behind `err` (TFX may re-raise it wrapped), or None for any other failure."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, BadDataError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
