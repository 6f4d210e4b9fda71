"""`python -m radfinder.compat DIR` is the same as `python -m radfinder.compat.verify DIR`."""

import sys

from .verify import main

sys.exit(main())
