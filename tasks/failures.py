"""What a task's action does when the machine refuses it (a full disk, a read-only mount, EIO ...)
or something is in the way (a file where a folder belongs, a link that loops): one `cephboot:` line, never a traceback.

Every task's actions are wrapped (``guarded`` on each ``task_*`` generator), so an OSError of
the environment that escapes any action, whichever stage or command raised it, becomes a
TaskFailed: doit then ends non-zero with one line naming the task, the host where there is
one, the path and what failed (``cephboot: render:hosts: zephyr: build/hosts/zephyr/...: No
space left on device``).  Everything cephboot writes is written atomically (tasks/fileio.py),
so what was there before stays as it was; the stages keep the record of what they finished.
Other exceptions are bugs and keep their traceback.

While the tasks load (before any task runs) there is no task to fail: ``stop`` ends doit with
one line and exit status 2, as an invalid inventory does (tasks/inventory.load_for_tasks), and
``loading`` turns an OSError of the work done then (build/ made and cleaned) into that line.
"""
from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from doit.exceptions import TaskFailed

# The machine's refusals, not cephboot's mistakes: the same run succeeds once someone frees
# space, remounts, fixes permissions or raises a limit, or moves away what is in the way (a file
# where a folder belongs, a folder where a file belongs, a link that loops).
ENVIRONMENTAL = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EMFILE,
    errno.ENFILE, errno.ENOMEM, errno.EFBIG, errno.ESTALE, errno.EBUSY, errno.ETXTBSY, errno.ENOLCK,
    errno.ENXIO, errno.ENODEV, errno.EAGAIN, errno.ENOTDIR, errno.EISDIR, errno.ELOOP,
})
GUARDED = "_cephboot_guarded"  # set on every wrapped action (tests check that no action lacks it)


class ClusterWide(Exception):
    """An error that no other host of a per-host command would escape (the cluster unreachable,
    its admin refused, another cluster answering): the command stops at once (selection.run_hosts)."""


def environmental(e: BaseException) -> bool:
    """Whether ``e`` is the machine refusing (ENOSPC, EROFS, EACCES ...), not a bug."""
    return isinstance(e, OSError) and e.errno in ENVIRONMENTAL


def why(e: OSError, fallback: str = "") -> str:
    """`<path>: <reason>`, the way every `cephboot:` message names a refused file."""
    path = e.filename or fallback
    reason = e.strerror or str(e)
    return f"{path}: {reason}" if path else reason


def failure(where: str, e: OSError, fallback: str = "") -> TaskFailed:
    """The one line that reports ``e`` for ``where`` (`render:hosts: zephyr`, `publish: host zephyr`, `nginx`)."""
    return TaskFailed(f"cephboot: {where}: {why(e, fallback)}")


# (file, key, value) of each leaf of the inventory that a rendered file may carry
Values = Iterable[tuple[str, str, Any]]


def leaves(data: dict[str, Any], origin: Callable[[str], str], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(file, key, value) of every leaf of a validated record (each list item on its own), the
    file being ``origin(key)``: the candidates ``unsafe`` blames."""
    for key, value in data.items():
        full = prefix + str(key)
        if isinstance(value, dict):
            yield from leaves(value, origin, full + ".")
        elif isinstance(value, list):
            for item in value:
                yield from leaves(item, origin, full + ".") if isinstance(item, dict) else [(origin(full), full, item)]
        elif value is not None:
            yield origin(full), full, value


def site_values(settings: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """leaves() of the site settings: every one is set in hosts/site.yaml."""
    return leaves(settings, lambda _: "hosts/site.yaml")


def host_values(host: Any) -> Iterator[tuple[str, str, Any]]:
    """leaves() of a host (a model.Host), each with the file that set it."""
    return leaves(host.data, host.origin)


def unsafe(where: str, e: Any, values: Values, template: str = "") -> TaskFailed:
    """The one line for a value a template's quoting filter refused (``e``, a quoting.UnsafeValue).

    The value that reached the template may be derived from a key (nginx's listen from
    pxe.http_base, the kernel command line from kernel_args): the key blamed is the one of
    ``values`` whose value shares the longest run of text around the refused character. Only that
    inventory value is quoted, never the refused text itself (it may come from a key file)."""
    text, at = getattr(e, "text", ""), getattr(e, "at", -1)
    best: tuple[int, str, str, str] | None = None
    for file, key, value in values if 0 <= at < len(text) else ():
        s = str(value)
        if text[at] not in s:
            continue
        a, b = at, at + 1
        while a > 0 and text[a - 1:b] in s:
            a -= 1
        while b < len(text) and text[a:b + 1] in s:
            b += 1
        if best is None or b - a > best[0]:
            best = (b - a, file, key, s)
    made = f" (in {template})" if template else ""
    if best is None:
        return TaskFailed(f"cephboot: {where}: a value {e}{made}")
    from .schema import shown

    return TaskFailed(f"cephboot: {where}: {best[1]}: {best[2]}: {shown(best[3])} {e}{made}")


def stop(message: str) -> NoReturn:
    """End doit while the tasks load: `cephboot: <message>` on stderr, exit status 2, no traceback;
    no task has run, so nothing was written but build/'s own housekeeping."""
    sys.stderr.write(f"cephboot: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


@contextmanager
def loading(expected: str) -> Iterator[None]:
    """While the tasks load: an OSError ends doit with `cephboot: <path>: <reason>; <expected>` (stop)."""
    try:
        yield
    except OSError as e:
        stop(f"{why(e)}; {expected}")


def guard(where: str, action: Callable[..., Any]) -> Callable[..., Any]:
    """``action`` with the machine's refusals turned into a TaskFailed for ``where``."""
    if getattr(action, GUARDED, False):
        return action

    @functools.wraps(action)  # doit reads the signature (task, only, targets ...) through __wrapped__
    def guarded_action(*args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except OSError as e:
            if not environmental(e):
                raise
            return failure(where, e)

    setattr(guarded_action, GUARDED, True)
    return guarded_action


def _name(task: dict[str, Any]) -> str:
    name = task.get("name")
    return f"{task['basename']}:{name}" if name else str(task.get("basename", ""))


def guard_task(task: dict[str, Any]) -> dict[str, Any]:
    """The task with each of its Python actions (and clean actions) guarded."""
    where = _name(task)
    for key in ("actions", "clean"):
        actions = task.get(key)
        if not isinstance(actions, list):
            continue
        wrapped: list[Any] = []
        for a in actions:
            if callable(a):
                a = guard(where, a)
            elif isinstance(a, tuple) and a and callable(a[0]):
                a = (guard(where, a[0]), *a[1:])
            wrapped.append(a)  # a shell command: its exit status says it already
        task[key] = wrapped
    return task


def guarded(creator: Callable[..., Any]) -> Callable[..., Any]:
    """A ``task_*`` generator whose tasks' actions are guarded (put on every task generator)."""

    @functools.wraps(creator)  # doit orders and finds creators through the wrapped function
    def create(*args: Any, **kwargs: Any) -> Any:
        made = creator(*args, **kwargs)
        if isinstance(made, dict):
            return guard_task(made)
        return _each(made)

    return create


def _each(tasks: Iterable[Any]) -> Iterator[Any]:
    for t in tasks:
        yield guard_task(t) if isinstance(t, dict) else t
