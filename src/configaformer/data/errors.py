"""The one error type for bad data inputs: a missing path, an unreadable file, a bad option."""

from __future__ import annotations


class DataError(ValueError):
    """A data input or option that cannot be used. The message names the path or the option.

    The `configaformer data` commands print it as `configaformer: <message>` and exit with 2.
    """
