"""User-facing errors: the CLI prints the message alone and exits with code 2."""

import re


class SftmixError(Exception):
    """Bad input (study file, data file, option). The message must name where and what was expected."""


class StudyError(SftmixError):
    """The study file is invalid."""


class DataError(SftmixError):
    """A data file or source cannot be read as declared."""


def redact(text: str) -> str:
    """A URL may carry credentials (user:password@host, ?token=...): never print or store them."""
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    return re.sub(r"([?&][^=&\s]*(?:token|key|secret|password|auth)[^=&\s]*=)[^&\s]+", r"\1***", text, flags=re.I)
