"""Progress of a run, as the library reports it: the CLI draws it, the library never prints."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress from a run."""

    def start(self, total_rows: int | None, streams: int) -> None:
        """The read session is open: ``total_rows`` expected (None: unknown) over ``streams``."""

    def advance(self, rows: int, nbytes: int) -> None:
        """``rows`` more source rows and ``nbytes`` more COPY bytes committed."""

    def phase(self, description: str) -> None:
        """The run entered a phase after the load (verifying, publishing, indexing)."""


class NoProgress:
    """A :class:`Progress` that ignores everything (the library's default)."""

    def start(self, total_rows: int | None, streams: int) -> None:
        pass

    def advance(self, rows: int, nbytes: int) -> None:
        pass

    def phase(self, description: str) -> None:
        pass
