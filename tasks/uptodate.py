"""doit's config_changed, cheap enough to run for every task of a 10,000-host site."""
from __future__ import annotations

import inspect

from doit.tools import config_changed as _doit_config_changed


class config_changed(_doit_config_changed):  # noqa: N801 - a drop-in for doit's class of that name
    """doit.tools.config_changed with its call signature declared up front.

    doit calls inspect.signature() on every callable uptodate check of every
    task on every run, to decide whether to pass ``task`` and ``values``; for a
    callable object that costs ~0.1 ms, a second per run at 10,000 hosts.  A
    declared ``__signature__`` is returned at once.  The saved value keeps
    doit's key, so state written by either class is read by the other.
    """

    __signature__ = inspect.Signature(
        [inspect.Parameter("task", inspect.Parameter.POSITIONAL_OR_KEYWORD), inspect.Parameter("values", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
