"""User-facing errors: the CLI prints the message alone and exits with code 2."""


class SftmixError(Exception):
    """Bad input (study file, data file, option). The message must name where and what was expected."""


class StudyError(SftmixError):
    """The study file is invalid."""


class DataError(SftmixError):
    """A data file or source cannot be read as declared."""
