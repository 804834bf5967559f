"""Stand-in base initrds for quick checks: small files doit records as built, so no mkinitramfs runs.

    python -m bench.stand_in SITE_DIR [DODO_PY]

Writes build/kernels/<kver>/{vmlinuz,initrd.img,initrd-sysfs.img} for every kernel the site's
hosts use and saves the `initrd:<kver>` tasks in doit's state exactly as a
successful run would (file states and the config_changed value), so later
`doit` runs find them up to date.  `doit ignore initrd` would not do: doit then
skips every task that depends on an ignored one (overlay, publish).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from doit.dependency import Dependency, SqliteDB
from doit.loader import generate_tasks

STAND_IN = b"stand-in base initrd (bench/stand_in.py): not bootable\n".ljust(512, b"\0")


def mark_built(site: Path, dodo: Path) -> list[str]:
    """Create the stand-ins under ``site`` and record their tasks as done; returns the task names."""
    os.chdir(site)
    sys.path.insert(0, str(dodo.parent))
    import dodo as project  # noqa: F401  (sets up build/ like a doit run does)
    from tasks.fileio import file_sha256, stat_memo_off
    from tasks.initrd import stamp_path, task_initrd, vmlinuz_path
    from tasks.uptodate import OutputsKept

    stat_memo_off()  # the stand-ins are written below: every key must be a fresh stat

    tasks = generate_tasks("initrd", task_initrd(), task_initrd.__doc__)
    by_name = {t.name: t for t in tasks}
    dep = Dependency(SqliteDB, project.DOIT_CONFIG["dep_file"])
    done = []
    for task in tasks:
        if not task.name.startswith("initrd:"):
            continue
        kver = task.name.split(":", 1)[1]
        for target in task.targets:  # vmlinuz and the base of each map method in use
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"stand-in kernel\n" if path == vmlinuz_path(kver) else STAND_IN)
        stamp_path(kver).write_text(json.dumps({Path(t).name: file_sha256(t) for t in task.targets}))
        # what build_bases returns: the targets' keys, which its OutputsKept check compares
        task.values = {"outputs": next(u for u, _, _ in task.uptodate if isinstance(u, OutputsKept)).keys()}
        dep.get_status(task, by_name)  # runs the uptodate checks, which register config_changed's value
        task.save_extra_values()
        dep.save_success(task)
        done.append(task.name)
    dep.close()
    return done


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m bench.stand_in SITE_DIR [DODO_PY]")
    dodo = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / "dodo.py"
    print("\n".join(mark_built(Path(sys.argv[1]).resolve(), dodo.resolve())))
