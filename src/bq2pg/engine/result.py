"""What a run reports: rows and bytes per table, timings, verification, dead letters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from bq2pg.quality.anomaly import Finding
from bq2pg.quality.gate import Outcome
from bq2pg.quality.rules import score


@dataclass(frozen=True)
class TableResult:
    """Rows and bytes loaded into one table."""

    name: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class RunResult:
    """The summary of one run (built once, when the run has published)."""

    run_id: uuid.UUID
    source: str
    target: str
    mode: str
    streams: int
    rows_read: int
    tables: list[TableResult]
    seconds: float
    load_seconds: float
    publish_seconds: float
    duplicates_collapsed: int = 0
    resumed: bool = False
    #: Tables whose content checksum was verified (the others: row counts only).
    checksummed: list[str] = field(default_factory=list)
    #: Source rows PostgreSQL rejected, kept in ``bq2pg.dead_letters`` (rows_read counts them).
    dead_letters: int = 0
    #: The quality rules' outcomes (empty: no rules, or ``skip_quality``).
    quality: list[Outcome] = field(default_factory=list)
    skip_quality: bool = False
    #: What was unusual about the run for its job (``engine.anomalies``).
    anomalies: list[Finding] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def quality_score(self) -> float | None:
        """The run's quality score, 0–100 (None: no rules were evaluated)."""
        return score([(o.rule.severity, o.passed) for o in self.quality])

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0
