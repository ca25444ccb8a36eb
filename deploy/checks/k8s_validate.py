#!/usr/bin/env python3
"""kubernetes-validate, with two changes for scripts/check-deploy:

  * schema files are parsed once per process, not once per object (the CLI
    re-reads the 10 MB _definitions.json for every object: 10x slower);
  * a WARN (no schema for a kind, e.g. a typo in `kind`) fails the run; the
    CLI only prints it and exits 0.

Arguments are those of the kubernetes-validate CLI.
"""
import contextlib
import functools
import io
import sys

import kubernetes_validate.__main__ as cli
import kubernetes_validate.utils as utils

utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = cli.main()
out = buf.getvalue()
sys.stdout.write(out)
if any(line.startswith(("WARN", "ERROR", "FATAL")) for line in out.splitlines()):
    rc = rc or 1
sys.exit(rc)
