"""Entry point: `radfinder ...` and `main(argv)` for tests. Each area registers its commands on `app`."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from ..errors import RadfinderError

# Command modules register themselves on import (one module per area of the package).
from . import (  # noqa: E402,F401,I001
    anatomy_cmds,
    data_cmds,
    demo_cmds,
    eval_cmds,
    generate_cmds,
    hub_cmds,
    info_cmds,
    io_cmds,
    library_cmds,
    mine_cmds,
    model_cmds,
    preprocess_cmds,
    pretrain_cmds,
    synth_cmds,
    text_cmds,
    train_cmds,
)
from .app import app, state

INTERNAL_ERROR_CODE = 1  # user errors (bad input, bad arguments) exit with 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (0 on success).

    Exit codes: 0 success, 2 a user error (`error: ...`: bad input file, bad option, usage), 1 an internal error
    (`internal error: ...`, a bug: the traceback is shown with `radfinder --debug ...` or RADFINDER_DEBUG=1).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    state["debug"] = os.environ.get("RADFINDER_DEBUG", "") not in ("", "0")
    try:
        # Without standalone mode click returns typer.Exit's code instead of raising it.
        rc = app(args=args, prog_name="radfinder", standalone_mode=False)
        if isinstance(rc, int):
            return rc
    except SystemExit as exc:  # typer.Exit inside standalone_mode=False still surfaces as code
        return int(exc.code or 0)
    except RadfinderError as exc:
        if state["debug"]:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # typer vendors its own click; recognise its usage errors and exits by shape, not by import path.
        name = type(exc).__name__
        if name == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if name == "Abort":
            return 1
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if state["debug"]:
            traceback.print_exc()
        print(f"internal error: {name}: {exc}", file=sys.stderr)
        if not state["debug"]:
            print("this is a bug in radfinder, not a problem with the input; run again with `radfinder --debug ...` "
                  "for the traceback, and please report it", file=sys.stderr)
        return INTERNAL_ERROR_CODE
    return 0


def run() -> None:
    sys.exit(main())
