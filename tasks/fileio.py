"""All file I/O: atomic writes (whole or streamed in bounded parts) and copies with one temp-name scheme, leftovers of killed runs,
the stat keys and their memo, the private build/ folder and its JSON caches, and folders that others can write,
worked in through a descriptor without ever following a link."""
from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from . import layout

CHUNK = 1 << 20  # what a streamed write, copy or comparison holds in memory at once
NODE = socket.gethostname().split(".")[0] or "localhost"
# .<name>.tmp.<node>.<pid>: the one temp-name scheme (the node: a tree on CephFS is shared by
# publishers on several machines).  Also matches .<name>.tmp<pid>, what older versions left.
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp(?:\.(?P<node>[^.]+)\.|)(?P<pid>\d+)$")
# folders a run keeps its temporaries in (fileio.tmp_dir()): <node>.<pid>
_TMP_DIR = re.compile(r"^(?P<node>[^.]+)\.(?P<pid>\d+)$")
BUILD = str(layout.BUILD)
TMP_ROOT = str(layout.TMP)  # TMPDIR of programs cephboot runs (mkinitramfs): leftovers are ours to remove
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _NO_FOLLOW  # a planted FIFO must not block us


def tmp_name(name: str) -> str:
    """The temporary name of ``name`` while this process writes it (same folder, hidden)."""
    return f".{name}.tmp.{NODE}.{os.getpid()}"


def report(path: str | Path, what: str) -> None:
    """Say on stderr what was found at ``path`` and what was done about it."""
    sys.stderr.write(f"cephboot: {path}: {what}\n")
    sys.stderr.flush()


def _named(e: OSError, path: str | Path) -> OSError:
    """``e`` naming the whole path (calls relative to a folder's descriptor know only the name)."""
    return OSError(e.errno, e.strerror or str(e), str(path))


# --- build/ ----------------------------------------------------------------------------

def write_if_changed(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically (temp file + rename) unless it already holds it.

    Returns True when the file was (re)written.  An unchanged file keeps its
    mtime, so doit tasks that depend on it stay up to date.  The rename alone
    means a reader or an interrupted run never sees a half-written file;
    ``durable`` adds an fsync so the new content also survives a power cut
    (wanted for published files, not worth its cost for build/ outputs that
    doit can make again).  For files in folders only we can write (build/).
    """
    return write_parts_if_changed(path, lambda: iter((data,)), len(data), mode, durable)


def write_parts_if_changed(path: Path, parts: Callable[[], Iterable[bytes]], size: int, mode: int = 0o644,
                           durable: bool = False) -> bool:
    """write_if_changed() of the concatenation of what ``parts()`` yields (``size`` bytes in all),
    never holding more than one part: compared with the file part by part, written part by part
    (Folder.write_parts).  ``parts`` is called once for the comparison and once more for the write."""
    try:
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_size == size and (st.st_mode & 0o7777) == mode and _holds(path, parts()):
            return False
    except (FileNotFoundError, NotADirectoryError):
        pass
    with Folder.root(path.parent) as folder:  # made if missing
        folder.write_parts(path.name, parts, size, mode, None, durable)
    return True


def _holds(path: Path, parts: Iterable[bytes]) -> bool:
    """True when ``path`` holds exactly the concatenation of ``parts`` (read as far as they go)."""
    with open_regular(path) as f:
        for part in parts:
            if f.read(len(part)) != part:
                return False
        return f.read(1) == b""


def file_parts(path: Path) -> Iterator[bytes]:
    """The bytes of ``path`` (a file cephboot wrote: open_regular) in blocks of at most CHUNK."""
    with open_regular(path) as f:
        while block := f.read(CHUNK):
            yield block


def open_regular(path: Path | str) -> BinaryIO:
    """``path``, a file cephboot wrote (under build/), open for reading: never through a link and
    never blocking on a FIFO planted there.  Anything but a regular file is an OSError naming the
    path (something in the way: one `cephboot:` line, failures.ENVIRONMENTAL)."""
    return os.fdopen(_open_file(path, _READ), "rb")


def open_to_write(path: Path | str, truncate: bool = True) -> BinaryIO:
    """``path``, a log or lock file cephboot keeps under build/, created (owner-only) or opened for
    writing, emptied unless not ``truncate``: as open_regular, never through a link and never
    blocking on a FIFO planted there (a FIFO without a reader refuses a non-blocking writer)."""
    f = os.fdopen(_open_file(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | _NO_FOLLOW), "wb")
    if truncate:
        f.truncate(0)
    return f


def _open_file(path: Path | str, flags: int) -> int:
    """The descriptor of regular file ``path`` opened with ``flags``; anything else an OSError naming the path."""
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP and _is_link(path):  # O_NOFOLLOW refused the file itself, not a folder on the way
            raise OSError(errno.ELOOP, "a symbolic link where a file belongs (not followed)", str(path)) from None
        if e.errno == errno.ENXIO:  # a FIFO no one reads, or a device that is not there
            raise OSError(errno.ENXIO, f"{_kind_at(path)} where a file belongs (not opened)", str(path)) from None
        if e.errno == errno.EISDIR:
            raise OSError(errno.EISDIR, "a folder where a file belongs", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a folder where a file belongs", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.ENXIO, f"{kind(st)} where a file belongs (not opened)", str(path))
        return fd
    except BaseException:
        os.close(fd)
        raise


def _kind_at(path: Path | str) -> str:
    try:
        return kind(os.lstat(path))
    except OSError:
        return "a special file"


def folder_there(path: Path) -> bool:
    """Whether ``path``, a folder cephboot keeps under build/ (a cached tree), is there; something
    else in its place (a file, a FIFO, a link) is an OSError naming the path, never taken for it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, f"{kind(st)} where a folder belongs", str(path))
    return True


def _is_link(path: Path | str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: Path | str) -> bytes:
    """The bytes of a file cephboot wrote (open_regular: no link followed, no FIFO blocking)."""
    with open_regular(path) as f:
        return f.read()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_parts(fd: int, parts: Iterable[bytes], size: int) -> None:
    """Write each of ``parts``; fail unless they come to ``size`` bytes (a source changed while it
    was read: better no file than a wrong one)."""
    written = 0
    for part in parts:
        _write_all(fd, part)
        written += len(part)
    if written != size:
        raise OSError(errno.EIO, f"expected {size} bytes, got {written} (a source changed while it was read)")


def replace_tmp(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file over ``path`` (removing the temporary on failure); an
    OSError names ``path``, not the temporary (a folder there: `<path>: Is a directory`)."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tmp_dir() -> str:
    """This process's private temporary folder, build/tmp/<node>.<pid> (TMPDIR for mkinitramfs).
    prepare_build() makes it and removes it when the process ends: found after its process is
    gone, it tells the next run that a run was killed (see prepare_build())."""
    path = os.path.abspath(f"{TMP_ROOT}/{NODE}.{os.getpid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def prepare_build() -> None:
    """The doit process's one-time setup of build/: owner-only whatever the umask (tightened
    with a message where it was looser), and what killed runs left there removed.

    Each run holds build/tmp/<node>.<pid> while it runs.  Where one is left by a process that
    is gone, that run was killed: the whole of build/ is searched once for the temporaries of
    dead processes (a killed render leaves them among the hosts' files); otherwise only the
    folders where big ones land (build/, build/state, build/kernels/*) are looked at.

    An OSError names the path: build/ or a folder of it that is something else (a file, a link
    to nothing or one that loops), or cannot be written (a read-only mount); the caller says
    what was expected (engine.setup, while the tasks load)."""
    os.umask(0o077)
    check_folders()
    _check_doit_db()
    os.makedirs(BUILD, mode=0o700, exist_ok=True)
    st = os.stat(BUILD)
    if st.st_uid != os.geteuid():  # whoever owns it can put anything in it (a cache we load)
        from .failures import stop  # above this module

        stop(f"{os.path.abspath(BUILD)}: owned by uid {st.st_uid}, not by the user running doit "
             f"(uid {os.geteuid()}): remove it, or chown -R it, after checking what is in it")
    if st.st_mode & 0o077:
        os.chmod(BUILD, 0o700)
        report(BUILD, f"was mode {stat.S_IMODE(st.st_mode):04o} (others could read or write it); now 0700")
    killed = False
    for e in _scandir(TMP_ROOT):
        m = _TMP_DIR.match(e.name)
        if m and _dead(m["node"], m["pid"]):
            shutil.rmtree(e.path, ignore_errors=True)
            killed = True
    if killed:
        for folder, _, _ in os.walk(BUILD):  # never follows a link
            remove_stale_temps(folder, locked=False)
    else:
        for folder in (BUILD, f"{BUILD}/state", *(e.path for e in _scandir(f"{BUILD}/kernels") if e.is_dir(follow_symlinks=False))):
            remove_stale_temps(folder, locked=False)
    mine = tmp_dir()
    atexit.register(shutil.rmtree, mine, True)


def check_folders() -> None:
    """Each of layout.FOLDERS that exists is a folder (a link to one too: build/ on another disk);
    else an OSError naming it (os.stat's own for a link that loops)."""
    for folder in layout.FOLDERS:
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            if os.path.lexists(folder):
                raise OSError(errno.ENOENT, "is a symbolic link to nothing", str(folder)) from None
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, f"is {kind(st)}", str(folder))


_SQLITE = b"SQLite format 3\0"  # how every SQLite database begins (an empty file is a new one)


def doit_db_problem() -> str:
    """What is wrong with doit's records (build/doit.sqlite3) where they exist ("" when nothing is): doit
    itself would block on a FIFO there, or end with a traceback.  The file is opened non-blocking."""
    try:
        fd = os.open(layout.DOIT_DB, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    except OSError as e:
        return e.strerror or str(e)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return f"is {kind(st)}"
        if st.st_size and os.pread(fd, len(_SQLITE), 0) != _SQLITE:
            return "is not an SQLite database"
        return ""
    except OSError as e:
        return e.strerror or str(e)
    finally:
        os.close(fd)


def _check_doit_db() -> None:
    """doit's records, where they exist, are an SQLite database; else one line and exit 2."""
    what = doit_db_problem()
    if what:
        from .failures import stop  # above this module

        stop(f"{layout.DOIT_DB}: {what}; expected doit's records of the tasks (an SQLite database): "
             "move it away and run doit again (doit starts new records; the stages check every host again)")


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _dead(node: str | None, pid: str) -> bool:
    """True when ``pid`` of ``node`` (None: an old name, this machine) no longer runs."""
    if node is not None and node != NODE:
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temps(folder: str | Path, locked: bool) -> None:
    """Remove what killed writers left in ``folder`` (a path in build/): with the folder locked
    every temporary is stale (its writer held the lock), else only those of dead processes."""
    for e in _scandir(str(folder)):
        m = _TMP.match(e.name)
        if m and (locked or _dead(m["node"], m["pid"])):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                Path(e.path).unlink(missing_ok=True)


# --- caches in build/ -------------------------------------------------------------------
# Plain JSON (never a format that runs code when loaded; the one exception, templates' compiled
# code, is tasks/templating._code_cache, kept like the code itself): written owner-only and atomically,
# read only when the file is ours, nobody else may write it, and it is no link.

def read_private(path: Path | str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of ours that nobody else may write; else None."""
    try:
        fd = os.open(path, _READ)  # no link, and a planted FIFO does not block
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def read_private_json(path: Path) -> Any:
    """JSON from ``path`` if it is a regular file of ours that nobody else may write; else None."""
    raw = read_private(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def write_private_json(path: Path, data: Any) -> bool:
    """Write ``data`` to ``path`` as JSON, owner-only (0600; build/ is made 0700), atomically; a failure only costs the cache."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return False
    return write_private(path, text)


def write_private(path: Path, data: bytes | Iterable[bytes | memoryview]) -> bool:
    """Write ``data`` (or each of its parts, in order, as an iterable makes them: no copy of them
    joined) to ``path``, owner-only (0600), atomically; False when that failed (a cache is only lost)."""
    tmp = path.parent / tmp_name(path.name)
    try:
        for folder in (path.parent.parent, path.parent) if path.parent.name == layout.INVENTORY_SHARDS.name else (path.parent,):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
        tmp.unlink(missing_ok=True)  # a leftover of a killed run with our pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                _write_all(fd, part)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


# --- digests ---------------------------------------------------------------------------

def shard_count(items: int, per: int) -> int:
    """Shards for a record of ``items`` entries, ~``per`` each: a power of two (the inventory cache, stage records)."""
    count = 1
    while count * per < items:
        count *= 2
    return count


def digest(*parts: bytes | str) -> str:
    """A short stable digest of several strings or byte strings."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()[:32]


def files_digest(paths: list[Path]) -> str:
    """Digest of the contents of ``paths`` (in the given order)."""
    return digest(*(p.read_bytes() for p in paths))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    for block in file_parts(Path(path)):
        h.update(block)
    return h.hexdigest()


# --- stat keys, one stat per file per run ---------------------------------------------------
# A no-op run at 10,000 hosts looks at ~150,000 files, and a stat costs ~3.5 us on
# the reference machine: a file that is an output of one stage and an input of the
# next must not be looked at twice.  The memo holds while only stages run: before
# one runs, cephboot's reporter makes it forget the files it is about to write
# (stat_memo_forget()); before any other task runs, the reporter calls
# stat_memo_off(), and from then on every call is a real stat.

def fresh_key(path: str) -> str:
    """file_key's "size:mtime_ns:mode(octal)" from a stat now, never the memo ("" when there is no
    file, or it cannot be looked at: a link that loops ...; whoever reads it next says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode:o}"


class _Keys(dict):  # type: ignore[type-arg]
    """path -> file_key(path): a lookup of a remembered file stays in C (a stage's check makes
    ~150,000 at 10,000 hosts, through map()); a file not remembered is looked at here."""

    def __missing__(self, path: str) -> str:
        key = fresh_key(path)
        if _memo_on:
            self[path] = key
        return key


_KEYS = _Keys()
_memo_on = False  # dodo.py turns it on for a doit process; a library user gets plain stats
# what the quiet manifest (tasks/quiet.py) needs besides _KEYS while the memo is on: the
# identity_key of each entry looked at, and the paths forgotten since (written by a stage)
_IDENTS: dict[str, str] = {}
_FORGOTTEN: set[str] = set()


def stat_memo_on() -> None:
    global _memo_on
    _memo_on = True


def file_key(path: str) -> str:
    """What make would compare of a file: "size:mtime_ns:mode" ("" when it does not exist);
    remembered until stat_memo_forget(path) or stat_memo_off().  Called ~150,000 times by
    a no-op at 10,000 hosts, so it is kept to a dictionary lookup when remembered (key_of).
    No inode: a site copied with its mtimes stays up to date."""
    return _KEYS[path]


# file_key itself, without a Python frame when the file is remembered: for map() over many paths
key_of = _KEYS.__getitem__


def identity_key(path: str) -> str:
    """file_key plus what only a rewrite can change: inode, ctime, owner and group, of the
    entry itself (a link is not followed).  What the publisher records of each file it
    wrote where others can write: someone else's change, even one that restores size and
    mtime, gives another key ("" when there is no entry)."""
    try:
        key = identity_of(os.lstat(path))
    except OSError:  # none, or none that can be looked at (as fresh_key)
        key = ""
    if _memo_on:
        _IDENTS[path] = key
    return key


def identity_of(st: os.stat_result | None) -> str:
    """identity_key of an entry already looked at (None: no entry): a hash of the seven
    numbers (Python's hash of a tuple of ints, the same in every run of one Python; a
    stage's records at 10,000 hosts stay small, and a no-op fast)."""
    if st is None:
        return ""
    return format(identity_number(st), "x")


def identity_number(st: os.stat_result) -> int:
    """identity_of as a number below 2**64 (tasks/quiet.py packs them, with this body inline)."""
    return hash((st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns, st.st_uid, st.st_gid)) & IDENTITY_MASK


IDENTITY_MASK = (1 << 64) - 1
NO_IDENTITY = IDENTITY_MASK  # identity_number's stand-in for no entry ("" in identity_of)


def stat_memo_off() -> None:
    """Forget every remembered stat and remember no more (a task is about to change files)."""
    global _memo_on
    _memo_on = False
    _KEYS.clear()
    _IDENTS.clear()
    _FORGOTTEN.clear()


def stat_memo_forget(paths: list[str]) -> None:
    """Forget what is remembered of ``paths`` (the caller has just written them)."""
    if not _memo_on:
        return
    for p in paths:
        _KEYS.pop(p, None)
        _IDENTS.pop(p, None)
    _FORGOTTEN.update(paths)


def stat_memo_seen() -> tuple[dict[str, str], dict[str, str], set[str]] | None:
    """While the memo is on: (file_key, identity_key) of every path looked at since it went on,
    and the paths forgotten since (tasks/quiet.py's manifest); None once it went off."""
    return (_KEYS, _IDENTS, _FORGOTTEN) if _memo_on else None


# --- folders others can write ---------------------------------------------------------------

class Folder:
    """An open folder of a tree that others can write (a host its own folder, the web server):
    every call works relative to this descriptor and never follows a link, so nothing in the
    tree can send a write, chmod or chown elsewhere.  Entries of the wrong kind are reported
    by path and removed, never followed.  OSErrors name the whole path."""

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path
        self.fixed = False  # its mode or group were set when it was opened

    @classmethod
    def root(cls, path: str | Path, mode: int | None = None) -> "Folder":
        """A tree's top folder (made if missing; given ``mode``).  Its path comes from the
        site's settings, so links on the way to it are followed; nothing below it is."""
        path = str(path)
        try:
            os.makedirs(path, mode=mode or 0o700, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise _named(e, path) from None
        folder = cls(fd, path)
        if mode is not None:
            folder.fixed = folder._fix(mode, None)
        return folder

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def where(self, name: str) -> str:
        return f"{self.path}/{name}"

    def entry(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (lstat), or None."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _named(e, self.where(name)) from None

    def is_file(self, name: str) -> bool:
        st = self.entry(name)
        return st is not None and stat.S_ISREG(st.st_mode)

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.fd))
        except OSError as e:
            raise _named(e, self.path) from None

    def folder(self, name: str, mode: int, gid: int | None = None) -> "Folder":
        """Open the sub-folder ``name`` (made if missing, with ``mode`` and group ``gid``); a
        link, file or anything else in its place is reported and removed first."""
        for _ in range(3):  # an entry swapped between our look and our open: look again
            st = self.entry(name)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                report(self.where(name), f"{kind(st)} where a folder belongs: removed, not followed")
                self.remove(name, only=st)
                st = None
            try:
                if st is None:
                    os.mkdir(name, 0o700, dir_fd=self.fd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=self.fd)
            except (FileExistsError, FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                if e.errno == errno.ELOOP:
                    continue
                raise _named(e, self.where(name)) from None
            sub = Folder(fd, self.where(name))
            sub.fixed = sub._fix(mode, gid) or st is None
            return sub
        raise OSError(errno.EAGAIN, "keeps changing while it is published", self.where(name))

    def existing(self, name: str) -> "Folder | None":
        """Open the sub-folder ``name`` to read it, or None when there is no folder by that name."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=self.fd)
        except OSError:
            return None
        return Folder(fd, self.where(name))

    def _fix(self, mode: int, gid: int | None) -> bool:
        """Set this folder's mode and group where they differ; True if anything was set."""
        try:
            st = os.fstat(self.fd)
            fixed = False
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(self.fd, mode)
                fixed = True
            if gid is not None and st.st_gid != gid:
                try:
                    os.fchown(self.fd, -1, gid)
                    fixed = True
                except OSError:
                    pass  # a folder's group only matters for setgid inheritance; files get theirs explicitly
            return fixed
        except OSError as e:
            raise _named(e, self.path) from None

    def remove(self, name: str, only: os.stat_result | None = None) -> None:
        """Remove the entry ``name`` whatever it is (a folder with all it holds; a link, not its
        target); with ``only``, only if it still is that entry."""
        st = self.entry(name)
        try:
            if st is None or (only is not None and (st.st_ino, st.st_dev) != (only.st_ino, only.st_dev)):
                return
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=self.fd)
            else:
                os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _named(e, self.where(name)) from None

    def open_file(self, name: str) -> int | None:
        """A descriptor to read the regular file ``name``, or None (missing, or not a regular file)."""
        st = self.entry(name)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        try:
            fd = os.open(name, _READ, dir_fd=self.fd)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def read(self, name: str, limit: int) -> bytes | None:
        """Up to ``limit`` bytes of the regular file ``name``, or None."""
        fd = self.open_file(name)
        if fd is None:
            return None
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)

    def same_content(self, src: str | Path, name: str) -> bool:
        """True when ``name`` is a regular file with exactly the bytes of the file ``src``."""
        st = self.entry(name)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != os.stat(src).st_size:
            return False
        fd = self.open_file(name)
        if fd is None:
            return False
        with open(src, "rb") as a, os.fdopen(fd, "rb") as b:
            while True:
                x, y = a.read(CHUNK), b.read(CHUNK)
                if x != y:
                    return False
                if not x:
                    return True

    def fix_mode(self, name: str, mode: int, gid: int | None) -> bool:
        """Set mode and group of the regular file ``name`` where they differ (no rewrite);
        True if anything was set."""
        fd = self.open_file(name)
        if fd is None:
            raise OSError(errno.ENOENT, "not a regular file any more", self.where(name))
        try:
            st = os.fstat(fd)
            fixed = False
            if gid is not None and st.st_gid != gid:
                _set_group(fd, self.where(name), gid)
                fixed = True
            if st.st_mode & 0o7777 != mode:
                os.fchmod(fd, mode)
                fixed = True
            return fixed
        except OSError as e:
            raise _named(e, self.where(name)) from None
        finally:
            os.close(fd)

    def copy_in(self, src: str | Path | tuple["Folder", str], name: str, mode: int, gid: int | None) -> None:
        """Copy ``src`` (a build file, or (folder, name) in this tree) to ``name``, atomically
        and durably (see write())."""
        def fill(fd: int) -> None:
            if isinstance(src, tuple):
                rfd = src[0].open_file(src[1])
                if rfd is None:
                    raise OSError(errno.ENOENT, "not a regular file", src[0].where(src[1]))
                reader = os.fdopen(rfd, "rb")
            else:
                reader = open(src, "rb")
            with reader:
                while block := reader.read(CHUNK):
                    _write_all(fd, block)
        self._fill(name, mode, gid, fill, durable=True)

    def write(self, name: str, data: bytes, mode: int, gid: int | None, durable: bool) -> None:
        """Write ``data`` to ``name`` atomically (see _fill())."""
        self._fill(name, mode, gid, lambda fd: _write_all(fd, data), durable)

    def write_parts(self, name: str, parts: Callable[[], Iterable[bytes]], size: int, mode: int, gid: int | None,
                    durable: bool) -> None:
        """Write the ``size`` bytes that ``parts()`` yields to ``name`` atomically, one part in
        memory at a time (see _fill())."""
        self._fill(name, mode, gid, lambda fd: _write_parts(fd, parts(), size), durable)

    def _fill(self, name: str, mode: int, gid: int | None, fill: Callable[[int], None], durable: bool) -> None:
        """The one atomic write: the bytes go to tmp_name(name) in this folder, which gets its
        group and mode before it has a name readers know (a key is never readable by others,
        even for a moment), is fsynced when ``durable``, then renamed over ``name`` (a link
        there is replaced, not followed; a folder there is removed).  A reader sees the old
        file or the new one, never a part; a writer killed meanwhile leaves only the
        temporary (removed by the next run)."""
        self._clear_for_file(name)
        tmp = tmp_name(name)
        self.unlink(tmp)  # a leftover of a dead process that had our pid
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600, dir_fd=self.fd)
        except OSError as e:
            raise _named(e, self.where(name)) from None
        try:
            _set_group(fd, self.where(name), gid)
            os.fchmod(fd, mode)  # the umask must not loosen or tighten what we ask for
            fill(fd)
            if durable:
                os.fsync(fd)
        except BaseException as e:
            os.close(fd)
            self._drop(tmp)
            if isinstance(e, OSError) and e.filename is None:
                raise _named(e, self.where(name)) from None
            raise
        os.close(fd)
        self._rename(tmp, name)

    def link_from(self, src: "Folder", name: str) -> None:
        """Make ``name`` here the same file as ``name`` in ``src`` (a hard link: no bytes written),
        replacing it atomically; a copy where the file system has no hard links."""
        a, b = src.entry(name), self.entry(name)
        if a is None or not stat.S_ISREG(a.st_mode):
            raise OSError(errno.ENOENT, "not a regular file", src.where(name))
        if b is not None and (b.st_dev, b.st_ino) == (a.st_dev, a.st_ino):
            return  # rename(2) of one hard link over another of the same file does nothing
        self._clear_for_file(name)
        tmp = tmp_name(name)
        self._drop(tmp)
        try:
            os.link(name, tmp, src_dir_fd=src.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise _named(e, self.where(name)) from None
            self.copy_in((src, name), name, a.st_mode & 0o7777, a.st_gid)
            return
        self._rename(tmp, name)

    def move(self, name: str, dst: "Folder", dst_name: str) -> None:
        """rename(2) ``name`` here to ``dst_name`` in ``dst`` (replacing what is there)."""
        try:
            os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)
        except OSError as e:
            raise _named(e, self.where(name)) from None

    def hard_link(self, name: str, dst: "Folder", dst_name: str) -> None:
        try:
            os.link(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd, follow_symlinks=False)
        except OSError as e:
            raise _named(e, dst.where(dst_name)) from None

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _named(e, self.where(name)) from None

    def touch(self, name: str) -> None:
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | _NO_FOLLOW, 0o600, dir_fd=self.fd))
        except OSError as e:
            raise _named(e, self.where(name)) from None

    def _clear_for_file(self, name: str) -> None:
        st = self.entry(name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            report(self.where(name), f"{kind(st)} where a file belongs: replaced, not followed")
            if stat.S_ISDIR(st.st_mode):
                self.remove(name)

    def _rename(self, tmp: str, name: str) -> None:
        try:
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as e:
            self._drop(tmp)
            raise _named(e, self.where(name)) from None

    def _drop(self, tmp: str) -> None:
        """Remove our temporary, whatever stands in the way (it is only a leftover then)."""
        try:
            self.unlink(tmp)
        except OSError:
            pass

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass  # some file systems (FUSE) refuse fsync on folders; the renames are already visible

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold an exclusive flock on this folder (a descriptor of its own, so that threads
        exclude each other too); yields False where the file system has no flock."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW, dir_fd=self.fd)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError:
                locked = False
            yield locked
        finally:
            os.close(fd)  # closing releases the lock

    def remove_stale_temps(self, locked: bool) -> None:
        """Remove the temporaries killed publishers left here (see fileio.remove_stale_temps)."""
        for name in self.names():
            if is_stale_temp(name, locked):
                self.remove(name)


def is_temp(name: str) -> bool:
    return _TMP.match(name) is not None


def is_stale_temp(name: str, locked: bool) -> bool:
    m = _TMP.match(name)
    return m is not None and (locked or _dead(m["node"], m["pid"]))


def kind(st: os.stat_result) -> str:
    """What an entry is, in words."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def _set_group(fd: int, path: str, gid: int | None) -> None:
    """Give the file to the web server's group; explain what to do where the file system refuses."""
    if gid is None:
        return
    try:
        os.fchown(fd, -1, gid)
    except OSError as e:
        if os.fstat(fd).st_gid == gid:  # a setgid folder already gave it that group
            return
        raise GroupError(path, gid, e.strerror or str(e)) from None


class GroupError(Exception):
    """The file system refused to give a published file the web server's group."""

    def __init__(self, path: str, gid: int, why: str):
        super().__init__(path, gid, why)
        self.path, self.gid, self.why = path, gid, why
