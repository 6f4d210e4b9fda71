"""Exception types shared by every layer. Each names the offending file where there is one."""

from __future__ import annotations

from pathlib import Path


class RadfinderError(Exception):
    """Base class: any error radfinder raises on purpose."""


class VolumeReadError(RadfinderError):
    """A volume could not be read or is not a usable CT volume."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ConfigError(RadfinderError):
    """A configuration, override or preset is invalid."""


class CheckpointError(RadfinderError):
    """A checkpoint is missing pieces or does not match the model, data or config."""
