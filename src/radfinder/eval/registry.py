"""Evaluation tasks as a registry: `radfinder evaluate`, the demo and `run_tasks` know no task by name.

Contract (`register_task(EvalTask(...))`):

* `name`: the `--task` name (e.g. `retrieval`, `zero-shot`); `aliases` are accepted too (`zero_shot`, `zeroshot`).
* `needs`: what the task reads beyond the volume embeddings (`EmbeddedVolumes`: global retrieval and disease
  embeddings of every record): `depth` (depth-cell embeddings, computed only when some task needs them),
  `labels` (the (N, F) label matrix in the model's vocabulary order), `pairs` (snippet pairs). Tasks that need
  anything else (segmentations, generated reports) read it from `TaskContext.options`, which the caller fills
  (`run_tasks(..., options={...})`).
* `kinds`: the dataset kinds whose `--task all` includes the task (a task needing `pairs` only when pairs are given).
* `run(ctx) -> dict | None`: computes the task. The built-in tasks fill `ctx.results` (a `TaskResults`, which
  `write_report` turns into metrics.json with the keys it always had); a new task returns its metrics dict, stored
  as `metrics.json[name]` (`TaskResults.extra[name]`). `ctx.results.skipped[name] = reason` records a skip.

Train-time evaluation hooks register the same way (`register_hook(name, factory)`: `factory(train_cfg)` returns a
hook or None; `radfinder.eval.hooks.hooks_for` builds every registered one a config asks for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RadfinderError


@dataclass
class TaskContext:
    model: Any
    records: Sequence[Any]
    emb: Any  # EmbeddedVolumes
    labels: np.ndarray  # (N, F) in the model's label-vocabulary order (-1 unknown)
    results: Any  # TaskResults
    pairs: Any = None  # path or list of snippet pairs
    n_boot: int = 0
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalTask:
    name: str
    run: Callable[[TaskContext], dict[str, Any] | None]
    needs: frozenset[str] = frozenset()
    kinds: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""


_TASKS: dict[str, EvalTask] = {}
_ALIASES: dict[str, str] = {}
_HOOKS: dict[str, Callable[[Any], Any]] = {}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register_task(task: EvalTask, *, replace: bool = False) -> EvalTask:
    key = _norm(task.name)
    if key in _TASKS and not replace:
        raise ValueError(f"evaluation task {task.name!r} is already registered")
    _TASKS[key] = task
    for a in (task.name, *task.aliases):
        _ALIASES[_norm(a)] = key
    return task


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> EvalTask:
    key = _ALIASES.get(_norm(name))
    if key is None:
        raise RadfinderError(f"unknown task {name!r}; choose from {', '.join(_TASKS)} or all")
    return _TASKS[key]


def tasks_for_kind(kind: str, has_pairs: bool) -> list[str]:
    """What `--task all` runs on a dataset kind (retrieval alone for a kind no task names)."""
    names = [k for k, t in _TASKS.items() if kind in t.kinds]
    if not names:
        names = ["retrieval"] if "retrieval" in _TASKS else []
    return [n for n in names if has_pairs or "pairs" not in _TASKS[n].needs]


def register_hook(name: str, factory: Callable[[Any], Any], *, replace: bool = False) -> None:
    """A train-time evaluation hook: `factory(train_cfg)` returns a hook (`radfinder.train.hooks.EvalHook`) or None
    when the config does not ask for it."""
    if name in _HOOKS and not replace:
        raise ValueError(f"evaluation hook {name!r} is already registered")
    _HOOKS[name] = factory


def hook_factories() -> dict[str, Callable[[Any], Any]]:
    return dict(_HOOKS)
