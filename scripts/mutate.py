"""Mutation testing of the connecting modules: does each module's own test set notice a small, realistic change?

For every listed module, deterministic AST-level mutants are generated (comparison flips, `and`/`or`, boolean and
integer constant changes, off-by-one, `not` removed, `+`/`-` and `*`/`/` swapped, a call statement, a `raise` or a
return value removed, the first two positional call arguments swapped). Each mutant is written into a private copy
of `src/` and only the tests mapped to its module (`MODULE_TESTS`) run against it, as CI runs them
(`-m "not slow" -x -q -p no:cacheprovider`, with a per-mutant timeout). A mutant is *killed* when pytest fails,
*survives* when the tests pass, and *times out* when it runs past the timeout (counted as detected, shown apart).
Mutants known to be equivalent (no observable behaviour changes) are listed in `EQUIVALENT` with the reason and
left out of the kill rate.

    python scripts/mutate.py                              # every module, every mutant (hours on 2 cores)
    python scripts/mutate.py --module serve/uploads.py --max-per-module 20 --json out.json
    python scripts/mutate.py --list --module models/shipped.py  # the mutants, without running anything

`make mutate` runs it with the Makefile's MUTATE_ARGS. Exit status 1 when a module is below `--min-kill` percent.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "radfinder"

# module (relative to src/radfinder) -> the test files that cover it. Extend this table when a new connecting
# module (e.g. the next encoder the demo ships) appears; the run refuses a module without tests.
MODULE_TESTS: dict[str, list[str]] = {
    "losses/objectives.py": ["tests/test_train_objective_registry.py"],
    "losses/registry.py": ["tests/test_train_objective_registry.py"],
    # the big-batch gradient test is the independent reference for the live (localization) path of the step
    "train/step.py": ["tests/test_train_plugins.py",
                      "tests/test_train_core.py::test_cached_step_equals_direct_big_batch_gradient"],
    "train/setup.py": ["tests/test_train_core.py"],
    "train/optim.py": ["tests/test_train_core.py"],
    "models/shipped.py": ["tests/test_pretrain_encoder.py"],
    "models/light3d.py": ["tests/test_pretrain_encoder.py"],
    "models/filterbank.py": ["tests/test_models_filterbank.py"],
    "models/standardized.py": ["tests/test_models_filterbank.py"],
    "features/extract.py": ["tests/test_features_store.py", "tests/test_features_extract.py",
                            "tests/test_features_prefetch.py::test_extraction_with_prefetch_writes_the_same_cache"],
    "library/search.py": ["tests/test_library_core.py"],
    "serve/app.py": ["tests/test_library_serve.py"],
    "serve/uploads.py": ["tests/test_library_serve.py"],
    "cli/eval_cmds.py": ["tests/test_evaluate_tasks.py",
                         "tests/test_train_plugins.py::test_registered_evaluation_task_writes_its_metrics"],
    "cli/library_cmds.py": ["tests/test_library_core.py"],
    "eval/report_generation_task.py": ["tests/test_generate_bank.py", "tests/test_generate_model.py",
                                       "tests/test_report_generation_fast.py"],
    "demo/stages.py": ["tests/test_demo_units.py"],
}

# (module, mutant id) -> why the mutant cannot change observable behaviour. Ids are printed by --list.
EQUIVALENT: dict[tuple[str, str], str] = {
    ("models/shipped.py", "sha256_of:int+1:20#1"): "the read chunk size (1 << 21 instead of 1 << 20) does not change "
                                                   "a file's sha256",
    ("losses/objectives.py", "select_for_batch:int+1:0#2"): "the generator seed when the batch has no samples: "
                                                            "select_prompts draws nothing for 0 samples",
    ("train/optim.py", "no_decay:int+1:1#1"): "name.rsplit('.', 2)[-1] is the same last component as "
                                              "name.rsplit('.', 1)[-1] for every name",
    ("models/shipped.py", "sha256_of:int+1:1#1"): "the read chunk size (2 << 20 instead of 1 << 20) does not change "
                                                  "a file's sha256",
}


# Hand-written regressions (issue 22: none of these made a test fail before) and the tests that must now catch each:
# name -> (module, exact source text, its replacement, test node ids); several texts and replacements are separated
# by "|". `--regressions` runs them.
REGRESSIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "swca-identity-targets": (
        "losses/objectives.py", "    w = swca_targets(ctx)\n",
        "    w = torch.eye(lv['image'].shape[0], dtype=torch.float64)\n",
        ["tests/test_train_objective_registry.py::"
         "test_swca_step_loss_and_gradients_equal_the_soft_contrastive_loss_on_report_targets"]),
    "light3d-shipped-weights-never-loaded": (
        "models/light3d.py", "    if weights:\n", "    if False:\n",
        ["tests/test_pretrain_encoder.py::test_a_built_encoder_holds_exactly_the_shipped_weights",
         "tests/test_pretrain_encoder.py::test_damaged_missing_or_misfit_weights_are_refused_when_the_encoder_is_built"]),
    "zip-member-cap-removed": (
        "serve/uploads.py", "if len(members) > limits.max_members:", "if False:",
        ["tests/test_library_serve.py::test_zip_member_cap_and_unpack_ratio_are_enforced"]),
    "zip-unpack-ratio-removed": (  # both: the header total and the byte count while unpacking (either alone refuses)
        "serve/uploads.py", "if total > cap:|if written > cap:", "if False:|if False:",
        ["tests/test_library_serve.py::test_zip_member_cap_and_unpack_ratio_are_enforced"]),
    "zip-symlink-members-unpacked": (
        "serve/uploads.py", "== 0o120000:  # symbolic link\n                    continue",
        "== 0o120000:  # symbolic link\n                    pass",
        ["tests/test_library_serve.py::test_symlink_members_are_never_unpacked"]),
    "report-generation-train-split-guard-removed": (
        "cli/eval_cmds.py", "if train_split == (split or spec.default_split):", "if False:",
        ["tests/test_evaluate_tasks.py::test_report_generation_refuses_to_fit_on_the_evaluated_split"]),
    "serve-non-loopback-warning-removed": (
        "cli/library_cmds.py", "if not is_loopback(host):", "if False:",
        ["tests/test_library_serve.py::test_serve_cli_passes_its_upload_limit_and_warns_beyond_loopback"]),
    # further regressions the rewritten tests of issue 22 catch (the old ones did not)
    "prefix-lm-attention-projections-train": (  # the old check filtered out every key containing "proj"
        "models/prefix_lm.py", "self.lm.requires_grad_(False)|for p in (m.lora_A, m.lora_B)]",
        "self.lm.requires_grad_(True)|for p in (m.lora_A, m.lora_B, m.weight)]",
        ["tests/test_generate_prefix_lm.py::test_prefix_lm_base_is_frozen_for_every_base_weight"]),
    "registered-task-metrics-dropped": (
        "eval/evaluate.py", "        metrics[name] = extra\n", "        pass\n",
        ["tests/test_train_plugins.py::test_registered_evaluation_task_writes_its_metrics"]),
}


@dataclass
class Mutant:
    module: str
    id: str  # stable across unrelated edits: enclosing function, operator, source text, occurrence
    line: int
    op: str
    before: str
    after: str
    source: str = field(repr=False, default="")


@dataclass
class Result:
    module: str
    id: str
    line: int
    op: str
    before: str
    after: str
    status: str  # killed | survived | timeout | equivalent
    seconds: float
    reason: str = ""


_CMP_FLIP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
             ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
# `/` is left alone: on paths (most of its uses here) any swap is a TypeError that every test notices
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div}


def _skip_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes whose mutation is meaningless: docstrings, annotations, `TYPE_CHECKING` blocks, `__all__`."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            mark(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for a in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs, node.args.vararg,
                      node.args.kwarg]:
                if a is not None:
                    mark(a.annotation)
        if isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            mark(node)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            mark(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mark(node)
    return skip


def _candidates(node: ast.AST) -> list[tuple[str, callable]]:
    """(operator name, in-place change) pairs applicable to one node."""
    out: list[tuple[str, callable]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_FLIP:
                def flip(n, i=i):
                    n.ops[i] = _CMP_FLIP[type(n.ops[i])]()
                out.append(("cmp-flip", flip))
    elif isinstance(node, ast.BoolOp):
        def swap_bool(n):
            n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()
        out.append(("and-or", swap_bool))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(("drop-not", None))  # replaced by its operand (handled by the transformer)
    elif isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            def flip_bool(n):
                n.value = not n.value
            out.append(("bool-flip", flip_bool))
        elif isinstance(v, int):
            def off_by_one(n):
                n.value = n.value + 1
            out.append(("int+1", off_by_one))
        elif isinstance(v, float) and v not in (0.0,):
            def scale(n):
                n.value = n.value * 2.0
            out.append(("float*2", scale))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
        def swap_bin(n):
            n.op = _BIN_SWAP[type(n.op)]()
        out.append(("arith-swap", swap_bin))
    elif isinstance(node, ast.Call):
        pos = [a for a in node.args if not isinstance(a, ast.Starred)]
        if len(pos) >= 2 and len(pos) == len(node.args) and ast.dump(node.args[0]) != ast.dump(node.args[1]):
            def swap_args(n):
                n.args[0], n.args[1] = n.args[1], n.args[0]
            out.append(("swap-args", swap_args))
    elif isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Await)):
        out.append(("drop-call", None))
    elif isinstance(node, ast.Raise):
        out.append(("drop-raise", None))
    elif isinstance(node, ast.Return) and node.value is not None \
            and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        def ret_none(n):
            n.value = ast.Constant(None)
        out.append(("return-none", ret_none))
    return out


class _Apply(ast.NodeTransformer):
    """Applies one mutation to the node with the given walk index."""

    def __init__(self, target: int, op: str, change):
        self.target, self.op, self.change, self.i = target, op, change, -1

    def generic_visit(self, node):
        return super().generic_visit(node)

    def visit(self, node):
        self.i += 1
        if self.i == self.target:
            if self.op == "drop-not":
                return node.operand
            if self.op in ("drop-call", "drop-raise"):
                return ast.Pass()
            self.change(node)
            return node
        return self.generic_visit(node)


def _enclosing(tree: ast.AST) -> dict[int, str]:
    names: dict[int, str] = {}

    def walk(node, name):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{name}.{node.name}" if name else node.name
        names[id(node)] = name or "<module>"
        for child in ast.iter_child_nodes(node):
            walk(child, name)

    walk(tree, "")
    return names


def _preorder(tree: ast.AST) -> list[ast.AST]:
    """Nodes in the order NodeTransformer.visit reaches them (pre-order, fields in order)."""
    out: list[ast.AST] = []

    def walk(node):
        out.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return out


def generate(module: str) -> list[Mutant]:
    """Every mutant of one module, in source order, each with its mutated source."""
    text = (PKG / module).read_text()
    tree = ast.parse(text)
    skip = _skip_nodes(tree)
    where = _enclosing(tree)
    nodes = _preorder(tree)
    seen: dict[str, int] = {}
    out: list[Mutant] = []
    for idx, node in enumerate(nodes):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        for op, change in _candidates(node):
            fresh = ast.parse(text)
            _Apply(idx, op, change).visit(fresh)
            try:
                mutated = ast.unparse(ast.fix_missing_locations(fresh))
                compile(mutated, module, "exec")
            except (SyntaxError, ValueError):
                continue
            before = ast.get_source_segment(text, node) or ast.unparse(node)
            before = " ".join(before.split())
            sub = copy.deepcopy(node)
            if op in ("drop-call", "drop-raise"):
                after = "pass"
            elif op == "drop-not":
                after = ast.unparse(node.operand)
            else:
                change(sub)
                after = ast.unparse(sub)
            key = f"{where[id(node)]}:{op}:{before[:60]}"
            seen[key] = seen.get(key, 0) + 1
            mid = f"{key}#{seen[key]}"
            out.append(Mutant(module, mid, node.lineno, op, before[:100], " ".join(after.split())[:100], mutated))
    return out


def sample(mutants: list[Mutant], n: int | None, seed: str) -> list[Mutant]:
    """A deterministic sample: the n mutants with the smallest hash of (seed, id); source order kept."""
    if n is None or len(mutants) <= n:
        return mutants
    ranked = sorted(mutants, key=lambda m: hashlib.sha256(f"{seed}:{m.id}".encode()).hexdigest())[:n]
    keep = {m.id for m in ranked}
    return [m for m in mutants if m.id in keep]


def _pytest(src_root: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(src_root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPYCACHEPREFIX": str(src_root.parent / "pycache")}
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider",
           "--timeout", str(int(timeout) + 5), *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0, ""
    tail = (proc.stdout + proc.stderr)[-2000:]
    if proc.returncode == 0:
        return "survived", time.monotonic() - t0, tail
    return "killed", time.monotonic() - t0, tail


def run_module(module: str, mutants: list[Mutant], timeout_factor: float, min_timeout: float, log,
               baselines: dict[tuple[str, ...], float]) -> tuple[list[Result], float]:
    """`baselines`: unmutated run time per test set, filled here; modules sharing a test set run it unmutated once."""
    tests = MODULE_TESTS[module]
    with tempfile.TemporaryDirectory(prefix="radfinder-mutate-") as tmp:
        src_root = Path(tmp) / "src"
        shutil.copytree(PKG, src_root / "radfinder", ignore=shutil.ignore_patterns("__pycache__"))
        target = src_root / "radfinder" / module
        original = target.read_text()
        if tuple(tests) not in baselines:
            status, base_s, tail = _pytest(src_root, tests, timeout=3600)
            baselines[tuple(tests)] = base_s if status == "survived" else -1.0
            if status != "survived":
                log(f"{module}: SKIPPED, its tests fail without a mutant (fix them first):\n{tail[-1500:]}")
        base_s = baselines[tuple(tests)]
        if base_s < 0:
            return [], base_s
        timeout = max(min_timeout, timeout_factor * base_s)
        log(f"{module}: {len(mutants)} mutants, tests {' '.join(tests)} take {base_s:.0f} s unmutated "
            f"(timeout {timeout:.0f} s)")
        results = []
        stamp = time.time()
        for k, m in enumerate(mutants, 1):
            target.write_text(m.source)
            stamp += 2  # a new mtime each time, so no stale bytecode of an earlier mutant is ever reused
            os.utime(target, (stamp, stamp))
            status, secs, _ = _pytest(src_root, tests, timeout)
            results.append(Result(module, m.id, m.line, m.op, m.before, m.after, status, round(secs, 1)))
            log(f"  [{k}/{len(mutants)}] {status:8s} {secs:5.0f} s  L{m.line} {m.op}: {m.before} -> {m.after}")
        target.write_text(original)
    return results, base_s


def run_regressions(names: list[str], log) -> dict[str, str]:
    """Apply each named regression to a copy of src/ and run its tests: "caught" when they fail."""
    out = {}
    for name in names:
        module, old, new, tests = REGRESSIONS[name]
        with tempfile.TemporaryDirectory(prefix="radfinder-regress-") as tmp:
            src_root = Path(tmp) / "src"
            shutil.copytree(PKG, src_root / "radfinder", ignore=shutil.ignore_patterns("__pycache__"))
            target = src_root / "radfinder" / module
            text = target.read_text()
            for o, n in zip(old.split("|"), new.split("|"), strict=True):
                if text.count(o) != 1:
                    raise SystemExit(f"regression {name}: {o!r} occurs {text.count(o)} times in {module}")
                text = text.replace(o, n)
            target.write_text(text)
            status, secs, tail = _pytest(src_root, tests, timeout=1800)
        out[name] = {"killed": "caught", "survived": "NOT CAUGHT", "timeout": "timeout"}[status]
        log(f"{name:45s} {out[name]:10s} {secs:5.0f} s  ({module}; {' '.join(t.split('::')[-1] for t in tests)})")
    return out


def table(results: list[Result]) -> list[dict]:
    rows = []
    for module in dict.fromkeys(r.module for r in results):
        rs = [r for r in results if r.module == module]
        c = {s: sum(r.status == s for r in rs) for s in ("killed", "survived", "timeout", "equivalent")}
        scored = c["killed"] + c["survived"] + c["timeout"]
        pct = 100.0 * (c["killed"] + c["timeout"]) / scored if scored else 100.0
        rows.append({"module": module, "mutants": len(rs), **c, "kill_pct": round(pct, 1)})
    return rows


def print_table(rows: list[dict], results: list[Result]) -> None:
    print(f"\n{'module':34s} {'mutants':>7s} {'killed':>6s} {'surv.':>5s} {'t/o':>4s} {'equiv':>5s} {'kill %':>6s}")
    for r in rows:
        print(f"{r['module']:34s} {r['mutants']:7d} {r['killed']:6d} {r['survived']:5d} {r['timeout']:4d} "
              f"{r['equivalent']:5d} {r['kill_pct']:6.1f}")
    surv = [r for r in results if r.status == "survived"]
    if surv:
        print("\nsurvivors (add a test that notices each, or list it in EQUIVALENT with the reason):")
        for r in surv:
            print(f"  {r.module}:{r.line} {r.op}: {r.before} -> {r.after}   [{r.id}]")
    eq = [r for r in results if r.status == "equivalent"]
    if eq:
        print("\nequivalent mutants:")
        for r in eq:
            print(f"  {r.module}:{r.line} {r.op}: {r.before} -> {r.after}: {r.reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", help="module under src/radfinder (repeatable); default: all")
    ap.add_argument("--max-per-module", type=int, default=None, help="deterministic sample of N mutants per module")
    ap.add_argument("--seed", default="radfinder", help="sampling seed (same seed, same sample)")
    ap.add_argument("--timeout-factor", type=float, default=5.0, help="per-mutant timeout = factor x unmutated run")
    ap.add_argument("--min-timeout", type=float, default=180.0)
    ap.add_argument("--min-kill", type=float, default=80.0, help="exit 1 when a module kills fewer percent")
    ap.add_argument("--json", type=Path, default=REPO / "mutation-report.json")
    ap.add_argument("--list", action="store_true", help="list the (sampled) mutants and exit")
    ap.add_argument("--carry-over", type=Path, metavar="JSON",
                    help="an earlier report: its killed mutants are kept as killed (not re-run), only its survivors "
                         "and the mutants it lacks run (after adding tests that only add checks)")
    ap.add_argument("--regressions", nargs="*", metavar="NAME",
                    help=f"run the hand-written regressions instead (all when no name): {', '.join(REGRESSIONS)}")
    ap.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                    help="print the combined table of earlier reports (mutants now in EQUIVALENT counted as such)")
    args = ap.parse_args(argv)
    if args.table:
        results = []
        for path in args.table:
            for r in json.loads(path.read_text())["results"]:
                reason = EQUIVALENT.get((r["module"], r["id"]))
                if reason:
                    r = {**r, "status": "equivalent", "reason": reason}
                results.append(Result(**r))
        rows = table(results)
        print_table(rows, results)
        return 1 if any(r["kill_pct"] < args.min_kill for r in rows) else 0
    if args.regressions is not None:
        names = args.regressions or list(REGRESSIONS)
        unknown = [n for n in names if n not in REGRESSIONS]
        if unknown:
            ap.error(f"unknown regression(s) {unknown}")
        got = run_regressions(names, lambda m: print(m, flush=True))
        return 0 if all(v == "caught" for v in got.values()) else 1

    modules = args.module or list(MODULE_TESTS)
    unknown = [m for m in modules if m not in MODULE_TESTS]
    if unknown:
        ap.error(f"no test mapping for {unknown}; add it to MODULE_TESTS in {Path(__file__).name}")
    plan = {m: sample(generate(m), args.max_per_module, args.seed) for m in modules}
    if args.list:
        for m, ms in plan.items():
            for mu in ms:
                eq = " (equivalent)" if (m, mu.id) in EQUIVALENT else ""
                print(f"{m}:{mu.line} {mu.op}: {mu.before} -> {mu.after}   [{mu.id}]{eq}")
        return 0

    def log(msg: str) -> None:
        print(msg, flush=True)

    carried: dict[tuple[str, str], dict] = {}
    if args.carry_over:
        for r in json.loads(args.carry_over.read_text())["results"]:
            if r["status"] in ("killed", "timeout"):
                carried[(r["module"], r["id"])] = r
    results: list[Result] = []
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "max_per_module": args.max_per_module, "seed": args.seed, "modules": {},
            "carried_over_from": str(args.carry_over) if args.carry_over else None}
    baselines: dict[tuple[str, ...], float] = {}
    for m in modules:
        kept = [Result(**carried[(m, mu.id)]) for mu in plan[m] if (m, mu.id) in carried]
        equiv = [Result(m, mu.id, mu.line, mu.op, mu.before, mu.after, "equivalent", 0.0, EQUIVALENT[(m, mu.id)])
                 for mu in plan[m] if (m, mu.id) in EQUIVALENT and (m, mu.id) not in carried]
        todo = [mu for mu in plan[m] if (m, mu.id) not in carried and (m, mu.id) not in EQUIVALENT]
        if kept:
            log(f"{m}: {len(kept)} mutants killed in {args.carry_over} kept as killed")
        rs, base_s = run_module(m, todo, args.timeout_factor, args.min_timeout, log, baselines) if todo else ([], 0.0)
        results += kept + equiv + rs
        meta["modules"][m] = {"tests": MODULE_TESTS[m], "unmutated_seconds": round(base_s, 1),
                              "mutants_total": len(generate(m))}
        rows = table(results)
        args.json.write_text(json.dumps({**meta, "table": rows, "results": [asdict(r) for r in results]},
                                        indent=1))
    rows = table(results)
    print_table(rows, results)
    print(f"\nwritten: {args.json}")
    return 1 if any(r["kill_pct"] < args.min_kill for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
