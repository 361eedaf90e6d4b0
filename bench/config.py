"""Run settings shared by every section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    reps: int = 3  # rounds of every load comparison (medians and spread over them)
    duration: float = 5.0  # seconds of each wrk run
    cold_runs: int = 12  # cold starts per contender
    quick: bool = False
