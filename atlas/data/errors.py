"""The one exception type of the data package: a bad input named down to the file, demo and key."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the data on disk, raised while the dataset is built (before any training).

    The message reads `FILE: DEMO: KEY: problem`; the parts are also kept as attributes so tests
    and callers can check them without parsing text.
    """

    def __init__(self, file: str, problem: str, demo: str | None = None, key: str | None = None):
        self.file, self.demo, self.key, self.problem = str(file), demo, key, problem
        where = ": ".join(part for part in (self.file, demo, key) if part)
        super().__init__(f"{where}: {problem}")
