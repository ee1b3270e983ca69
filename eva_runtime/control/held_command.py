"""The last command a runtime sent, kept in a small file so that a restarted runtime continues a grip.

A restarted policy node seeds its safety filter from the measured joints. For the arms that is right (they stand
where the last command left them, the driver holding it). For a gripper it is not: squeezing an object, its
reading is the object's width, not its command (the simulated gripper reads 1.09 with the command at 0.07), so a
seed from the reading opens the grip and drops the object. The dead node's last command cannot be learned from the
command topic (it was published before the new node subscribed) and the vendor drivers do not report the target
they hold, so the runtime keeps it itself: `HeldCommandFile.write` (rate-limited, atomic replace, JSON) on the
control path, `read` at start-up.

The file keeps the joints' reading beside the command. `seed_grippers` decides whether a read command may seed
the grippers, and refuses (the reading is used, with the reason logged) unless everything says it is the same
hold: the same embodiment and joint count, written recently, and the robot reading now as it read then (every arm
joint within `arm_tolerance`, every gripper within `gripper_tolerance`): nobody moved the arms or the grippers
since. Reading is compared with reading, not with the command, because an arm pressing on the object or the
table stands off its command (the chaos soak saw 0.1 rad) and a squeezing gripper reads the object's width.
Seeds are clipped into the hard range as every seed is (`safety.filter.reset_state`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eva_runtime.atomic_file import write_text_atomically

__all__ = ["FORMAT", "HeldCommand", "HeldCommandFile", "seed_grippers"]

FORMAT = "eva-runtime/held-command-v1"


@dataclass(frozen=True)
class HeldCommand:
    wall_time: float  # time.time() when written
    command: np.ndarray  # (dof,) the command last sent, after the safety filter
    embodiment: str
    measured: np.ndarray  # (dof,) the joints' reading that command was sent from


class HeldCommandFile:
    """One JSON file, replaced atomically (a reader sees the old or the new command, never half of one)."""

    def __init__(self, path: Path | str, embodiment: str, dof: int, min_interval_s: float = 0.1) -> None:
        self.path = Path(path).expanduser()
        self.embodiment = embodiment
        self.dof = dof
        self.min_interval_s = min_interval_s
        self._last_write = -math.inf
        self._written: np.ndarray | None = None
        self.failures = 0  # writes that failed (disk full, permissions, a bad command): counted, never raised
        self.last_error = ""

    def write(self, command: np.ndarray, measured: np.ndarray, now: float | None = None) -> bool:
        """Keep `command` and the `measured` joints it was sent from, unless written less than `min_interval_s` ago
        or both are unchanged; True if kept."""
        now = time.time() if now is None else now
        command = np.asarray(command, dtype=np.float64)
        measured = np.asarray(measured, dtype=np.float64)
        if now - self._last_write < self.min_interval_s:
            return False
        both = np.concatenate([command.ravel(), measured.ravel()])
        if self._written is not None and np.array_equal(both, self._written):
            return False
        if any(a.shape != (self.dof,) or not np.all(np.isfinite(a)) for a in (command, measured)):
            # Never kept and never raised into the control tick; a successor then seeds from the reading.
            self.failures += 1
            self.last_error = f"not kept: a held command and its reading must be {self.dof} finite values each"
            return False
        text = json.dumps(
            {
                "format": FORMAT,
                "embodiment": self.embodiment,
                "wall_time": now,
                "command": command.tolist(),
                "measured": measured.tolist(),
            }
        )
        try:
            # Not flushed to the device: the file must outlive a killed process (the page cache does), and an
            # fsync at up to 10 Hz on the control tick would cost more than a power cut's loss of it.
            write_text_atomically(self.path, text, sync=False)
        except OSError as error:
            self.failures += 1
            self.last_error = f"{self.path}: {error}"
            return False
        self._last_write, self._written = now, both
        return True

    def read(self, max_age_s: float, now: float | None = None) -> tuple[HeldCommand | None, str]:
        """The kept command, or None and why not (missing, unreadable, another robot, too old)."""
        now = time.time() if now is None else now
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, f"no held command at {self.path}"
        except (OSError, ValueError) as error:
            return None, f"{self.path}: unreadable held command ({error})"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None, f"{self.path}: not a {FORMAT} file"
        try:
            command = np.asarray(data["command"], dtype=np.float64)
            measured = np.asarray(data["measured"], dtype=np.float64)
            wall_time = float(data["wall_time"])
            embodiment = str(data["embodiment"])
        except (KeyError, TypeError, ValueError) as error:
            return None, f"{self.path}: malformed held command ({error!r})"
        if embodiment != self.embodiment:
            return None, f"{self.path}: held command of embodiment {embodiment!r}, not {self.embodiment!r}"
        finite = all(a.shape == (self.dof,) and np.all(np.isfinite(a)) for a in (command, measured))
        if not finite or not math.isfinite(wall_time):
            return None, f"{self.path}: held command or reading is not {self.dof} finite values"
        age = now - wall_time
        if not 0.0 <= age <= max_age_s:
            return None, f"{self.path}: held command is {age:.1f} s old (at most {max_age_s} s is used)"
        return HeldCommand(wall_time, command, embodiment, measured), ""


def seed_grippers(
    measured: np.ndarray,
    held: HeldCommand | None,
    is_gripper: np.ndarray,
    hard_low: np.ndarray,
    hard_high: np.ndarray,
    arm_tolerance: float = 0.02,
    gripper_tolerance: float = 0.05,
) -> tuple[np.ndarray, str]:
    """The seed for a start-up: the measured joints, with the grippers from `held` when it is the same hold.

    Returns the seed and a sentence for the log (why the held grippers were or were not used)."""
    measured = np.asarray(measured, dtype=np.float64)
    if held is None:
        return measured.copy(), "grippers seeded from their reading (no held command)"
    arms = ~is_gripper
    arm_gap = float(np.max(np.abs(measured[arms] - held.measured[arms]))) if arms.any() else 0.0
    if not arm_gap <= arm_tolerance:
        return measured.copy(), (
            f"grippers seeded from their reading: the arms moved {arm_gap:.3f} rad since the held command was "
            f"sent (tolerance {arm_tolerance}), so it is not this hold's"
        )
    gripper_gap = float(np.max(np.abs(measured[is_gripper] - held.measured[is_gripper])))
    if not gripper_gap <= gripper_tolerance:
        return measured.copy(), (
            f"grippers seeded from their reading: a gripper moved {gripper_gap:.3f} since the held command was "
            f"sent (tolerance {gripper_tolerance})"
        )
    seed = measured.copy()
    seed[is_gripper] = np.clip(held.command[is_gripper], hard_low[is_gripper], hard_high[is_gripper])
    return seed, f"grippers continue the held command {np.round(seed[is_gripper], 3).tolist()}"
