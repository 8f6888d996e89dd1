"""The one exception type users see.

A `MolabError` carries a message written for a person: what went wrong, where (file, field,
model id), and what to do. The CLI prints it as one line; other exceptions are bugs and keep
their traceback (shown with `--debug`).
"""


class MolabError(Exception):
    """A problem with the user's input or environment, explained in one line."""
