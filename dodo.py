"""cephboot: the doit entry point. Wires the task generators in tasks/; does no work while loading."""
import gc
import os
import sys

# No cyclic garbage collection while the tasks load: what loading makes is tables of strings,
# no cycles, and collections over it cost a host edit ~3 ms; it resumes once tasks run
# (tasks/engine.py). A no-op ends with it off.
gc.disable()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tasks import listing, quiet  # noqa: E402

# A plain `doit` whose every input, output and record is as the last run left them (one stat
# of each path in build/state/quiet) loads neither the inventory nor a task per host (tasks/quiet.py).
_QUIET = quiet.fast(sys.argv)

# A plain `doit list` prints top-level names and docs, which depend on the code and
# hosts/site.yaml only: from the last run's summary while those are unchanged, it loads
# neither the inventory nor a task per host (tasks/listing.py).
_LISTED = listing.read(os.getcwd()) if listing.plain_list(sys.argv) else None
if _QUIET is not None:
    task_quiet = quiet.creator(_QUIET)
    DOIT_CONFIG = quiet.config(_QUIET)
elif _LISTED is not None:
    task_listed = listing.creator(_LISTED)
    DOIT_CONFIG = {"backend": "sqlite3", "dep_file": "build/doit.sqlite3", "verbosity": 1}
else:
    from tasks.everything import *  # noqa: E402,F401,F403  (every task, and DOIT_CONFIG)
