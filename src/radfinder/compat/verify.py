"""`python -m radfinder.compat.verify DIR [--json]`: check every vector of a reference pack; non-zero exit on any
mismatch, on any check that could not run (e.g. a module that is not available), and on any stored tensor that
no check consumed."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from .checks_model import (
    check_combiner,
    check_e2e,
    check_heads,
    check_layouts,
    check_patch_fold,
    check_rope,
    check_text,
    check_window_encoder,
)
from .checks_other import check_losses, check_preprocess
from .pack import Check, ReferencePack

# vector file -> check group. Layouts run after the model groups (it reads the load report).
GROUPS: dict[str, Callable[[ReferencePack], list[Check]]] = {
    "tv_rope.safetensors": check_rope,
    "tv_patch_fold.safetensors": check_patch_fold,
    "tv_window_encoder.safetensors": check_window_encoder,
    "tv_combiner.safetensors": check_combiner,
    "tv_heads.safetensors": check_heads,
    "tv_text.safetensors": check_text,
    "tv_e2e.safetensors": check_e2e,
    "tv_losses.safetensors": check_losses,
    "tv_preprocess.safetensors": check_preprocess,
}


def _run_group(name: str, fn, pack: ReferencePack) -> list[Check]:
    label = name.removesuffix(".safetensors")
    try:
        checks = fn(pack)
    except ImportError as exc:
        return [Check(label, None, "-", False, f"not available: {exc}")]
    except Exception as exc:  # a crash in one group must not hide the others
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return [Check(label, None, "-", False, f"error: {tb}")]
    if not checks:
        return [Check(label, None, "-", False, "no checks could be derived from this file")]
    return checks


def verify(directory: str | Path, groups: Sequence[str] | None = None) -> list[Check]:
    pack = ReferencePack(directory)
    results: list[Check] = []
    files = pack.vector_files()
    failed_groups: set[str] = set()
    for name in files:
        if groups and name.removesuffix(".safetensors").removeprefix("tv_") not in groups:
            continue
        fn = GROUPS.get(name)
        if fn is None:
            results.append(Check(name, None, "-", False, "unknown vector file: no check knows it"))
            continue
        if not pack.has(name):
            results.append(Check(name, None, "-", False, "listed in the manifest but missing"))
            continue
        group = _run_group(name, fn, pack)
        if len(group) == 1 and group[0].max_abs is None and not group[0].ok:
            failed_groups.add(name)  # already failing; its coverage line would only repeat that
        results += group
    if not groups or "layouts" in groups:
        results += _run_group("layouts", check_layouts, pack)
    for name, tf in pack.loaded_files().items():
        if name in failed_groups or (groups and name.removesuffix(".safetensors").removeprefix("tv_") not in groups):
            continue
        unused = tf.unused()
        if unused:
            shown = ", ".join(unused[:6]) + (" ..." if len(unused) > 6 else "")
            results.append(Check(f"coverage.{name}", float(len(unused)), "0 unchecked", False,
                                 f"{len(unused)} stored tensor(s) not checked: {shown}"))
        else:
            results.append(Check(f"coverage.{name}", 0.0, "0 unchecked", True, f"all {len(tf.keys())} tensors used"))
    return results


def format_table(results: list[Check]) -> str:
    width = max([len(c.name) for c in results] + [5])
    lines = [f"{'check':<{width}}  {'max abs diff':>12}  {'tolerance':<22}  ok"]
    for c in results:
        diff = "-" if c.max_abs is None else f"{c.max_abs:.3g}"
        flag = "ok" if c.ok else "FAIL"
        lines.append(f"{c.name:<{width}}  {diff:>12}  {c.tol:<22}  {flag}" + (f"  {c.note}" if c.note else ""))
    n_bad = sum(not c.ok for c in results)
    lines.append(f"{len(results)} checks, {n_bad} failed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radfinder.compat.verify", description=__doc__)
    parser.add_argument("directory", help="reference pack directory (with manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", action="append", default=None,
                        help="run only these groups (rope, patch_fold, window_encoder, combiner, heads, text, e2e, "
                             "losses, preprocess, layouts); repeatable")
    args = parser.parse_args(argv)
    try:
        results = verify(args.directory, args.only)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = all(c.ok for c in results)
    if args.json:
        print(json.dumps({"pack": str(args.directory), "ok": ok, "n_checks": len(results),
                          "n_failed": sum(not c.ok for c in results), "checks": [c.as_dict() for c in results]},
                         indent=2))
    else:
        print(format_table(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
