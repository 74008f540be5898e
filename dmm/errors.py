"""The one exception type for problems with the user's input."""


class DmmError(Exception):
    """Bad input (unknown task, missing file, mismatched artifact, ...).

    The CLI prints it on one line and exits with status 2; library users can catch it.
    """
