"""Errors caused by what the user passed in; the CLI prints them as one line."""


class CptError(Exception):
    """Base of errors whose message names the bad input and the fix."""


class InputError(CptError, ValueError):
    """An input file or value cannot be used as given."""
