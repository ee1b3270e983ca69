"""EpisodeSession: a runtime's episodes in the outcome log, one at a time: the one logging path of `eva run` (one
episode per loop call, ended by the robot's own check or an operator's label) and of the ROS policy node (hours
long, episodes started and ended by service call). It keeps the bookkeeping: at most one open episode, counters
written while it runs, an outcome (and who gave it, with a note) when it ends, and on `close` an open episode is
ended as aborted, never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eva_runtime.records.outcome_log import OutcomeLog

__all__ = ["EpisodeSession"]

ABORTED_BY_SHUTDOWN = "runtime shut down before the episode was ended"


class EpisodeSession:
    def __init__(
        self, log: OutcomeLog, embodiment: str, bundle: Mapping[str, Any], model_id: str, software_version: str
    ) -> None:
        self.log = log
        self.embodiment = embodiment
        self.bundle = dict(bundle)
        self.model_id = model_id
        self.software_version = software_version
        self.episode_id: int | None = None
        self.task = ""

    @property
    def running(self) -> bool:
        return self.episode_id is not None

    def start(self, task: str, instruction: str, split: str) -> int:
        """Open an episode; ValueError (with the reason) when one is open or a field is invalid."""
        if self.episode_id is not None:
            raise ValueError(f"episode {self.episode_id} is still running: end it first")
        self.episode_id = self.log.start_episode(
            task, instruction, split, self.embodiment, self.bundle, self.model_id, self.software_version
        )
        self.task = task
        return self.episode_id

    def update(self, counters: Mapping[str, object]) -> None:
        if self.episode_id is not None:
            self.log.update_episode(self.episode_id, **counters)

    def end(
        self,
        outcome: str,
        counters: Mapping[str, object],
        note: str | None = None,
        labelled_by: str = "operator",
        reason: str | None = None,
    ) -> int:
        """Close the open episode with `outcome`; returns its id (ValueError when none is open)."""
        if self.episode_id is None:
            raise ValueError("no episode is running: start one first")
        episode_id = self.episode_id
        if outcome == "failure" and reason is None:
            reason = note or "labelled a failure by the operator"
        self.log.end_episode(episode_id, outcome, labelled_by, reason, note or None, **counters)
        self.episode_id = None
        return episode_id

    def close(self, counters: Mapping[str, object] | None = None) -> None:
        """End an open episode as aborted (the runtime is stopping); the log itself stays open for the caller."""
        if self.episode_id is not None:
            self.log.end_episode(
                self.episode_id, "aborted", "automatic", ABORTED_BY_SHUTDOWN, None, **dict(counters or {})
            )
            self.episode_id = None
