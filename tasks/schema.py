"""What every inventory key means: type, default and check, in one table that also feeds the README."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .quoting import ASCII_ONLY, UnsafeValue, quote


class Invalid(ValueError):
    """A value that does not match its schema entry; the message says what was expected."""


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class Field:
    """One leaf key: ``check`` returns the normalised value or raises Invalid."""

    check: Check
    doc: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Section:
    """A mapping of keys; ``optional`` sections may be absent or null as a whole; ``together``
    checks keys against each other once each is valid, yielding (key, why) of each that does not fit."""

    fields: dict[str, "Field | Section"]
    doc: str
    optional: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    together: Callable[[dict[str, Any]], Iterator[tuple[str, str]]] | None = None


# --- checks -----------------------------------------------------------------
# Every pattern is matched against the whole value (fullmatch): `$` would let one
# trailing newline through, which is what a YAML `|` block yields.

MAX_TEXT = 1024  # characters of any one string value: nothing cephboot writes needs more
MAX_ITEMS = 256  # items of any one list
SHOWN = 60  # characters of a value quoted back in a message


def shown(v: Any) -> str:
    """``v`` as a message quotes it: repr, cut to SHOWN characters (a value may be megabytes)."""
    if isinstance(v, (dict, list)):
        return f"a {'mapping' if isinstance(v, dict) else 'list'} of {len(v)} item(s)"
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return "a number of about %d digits" % int(v.bit_length() * 0.30103)
    try:
        r = repr(v)
    except ValueError:  # an int too long to print
        return "a very long number"
    return r if len(r) <= SHOWN else r[: SHOWN - 5] + "...' (" + str(len(str(v))) + " characters)"


_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_RADOS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_KVER = re.compile(r"latest|[0-9][A-Za-z0-9._+-]{0,99}")
_MAP_OPTION = re.compile(r"[a-z_][a-z0-9_]{0,63}(=[A-Za-z0-9_.:/-]{1,200})?")
_CEPHFS_PATH = re.compile(r"/([A-Za-z0-9_.-]{1,255}(/[A-Za-z0-9_.-]{1,255}){0,31})?")
_REL_PATH = re.compile(r"[A-Za-z0-9_.+-]{1,255}(/[A-Za-z0-9_.+-]{1,255}){0,31}")
_URL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*/?")
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_SIZE = re.compile(r"[1-9][0-9]{0,5}[MGT]")
_TMPFS_SIZE = re.compile(r"[1-9][0-9]?%|100%|[1-9][0-9]{0,5}[MG]")
_SNAPSHOT = re.compile(r"[0-9a-f]{16}")
_GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SUITE = re.compile(r"[a-z][a-z0-9-]{0,39}")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MON = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,3}){3})(?::([0-9]{1,5}))?")
MAX_GID = 2**32 - 2  # (gid_t)-1 means "no change" to chown
# SMBIOS strings an operator can set (firmware setup, BMC, QEMU -smbios), as /sys/class/dmi/id names them
SMBIOS_FIELDS = ("chassis_asset_tag", "board_asset_tag", "product_serial", "chassis_serial", "board_serial")
# what the original hand-made setup installs into every root
ROOTFS_PACKAGES = ("initramfs-tools", "linux-image-amd64", "ceph-common", "systemd-sysv", "zstd")


def expects(text: str) -> Callable[[Check], Check]:
    """Attach the constraint a check enforces, as the README's table states it."""

    def mark(check: Check) -> Check:
        check.expects = text  # type: ignore[attr-defined]
        return check

    return mark


def _str(v: Any) -> str:
    """A text value; an integer is the text it spells (``pool: 7`` is pool '7'): the loader takes only
    plain decimal integers (tasks/yamlfiles.py), the one form YAML reads as what it says."""
    if isinstance(v, float):
        raise Invalid(f"expected a string, got the number {v!r} (YAML reads 6.10 as 6.1): write it in quotes")
    if isinstance(v, bool):
        raise Invalid(f"expected a string, got the boolean {str(v).lower()} (YAML 1.1 reads yes, no, on, off, true and false, "
                      "in any case, as booleans): write it in quotes")
    if v is None:
        raise Invalid("expected a string, got null (YAML reads ~, null and nothing as null): write it in quotes")
    if not isinstance(v, (str, int)):
        raise Invalid(f"expected a string, got {type(v).__name__}")
    if isinstance(v, int) and v.bit_length() > 64:
        raise Invalid("expected a string, got a number too large for any key")
    s = str(v)
    if len(s) > MAX_TEXT:
        raise Invalid(f"expected at most {MAX_TEXT} characters, got {len(s)}")
    return s


def _regex(rx: re.Pattern[str], what: str, lower: bool = False) -> Check:
    @expects(what)
    def check(v: Any) -> str:
        s = _str(v)
        s = s.lower() if lower else s
        if not rx.fullmatch(s):
            raise Invalid(f"expected {what}")
        return s

    return check


host_name = _regex(_NAME, "a host name: lowercase letters, digits and '-', 1-63 characters, safe as a file name")
profile_name = _regex(_NAME, "a profile name: lowercase letters, digits and '-', 1-63 characters (the file hosts/profiles/NAME.yaml)")
rados_name = _regex(_RADOS_NAME, "a Ceph name: letters, digits, '_', '.', '-', 1-100 characters, not starting with '.' or '-'")
kernel_version = _regex(_KVER, "'latest' or an installed kernel version like 6.1.0-28-amd64 (a string)")


@expects("a unicast MAC address like 52:54:00:12:34:56 (not multicast, broadcast or all zeros)")
def mac(v: Any) -> str:
    s = _regex(_MAC, "a MAC address like 52:54:00:12:34:56", lower=True)(v)
    if s == "00:00:00:00:00:00":
        raise Invalid("expected a MAC address of a NIC; all zeros is no NIC's address")
    if int(s[:2], 16) & 1:
        raise Invalid("expected a unicast MAC address; the first octet's lowest bit marks a multicast (or the broadcast) address, which no NIC boots from")
    return s


@expects("an absolute CephFS path like /hosts/zephyr: letters, digits, '_', '.', '-' between '/', no '.' or '..' parts, at most 32 levels")
def cephfs_path(v: Any) -> str:
    s = _regex(_CEPHFS_PATH, cephfs_path.expects)(v)  # type: ignore[attr-defined]
    if any(part in (".", "..") for part in s.split("/")):
        raise Invalid("expected an absolute CephFS path without '.' or '..' parts")
    return s


@expects("an absolute CephFS folder other than '/', like /tree (the published tree; hosts' /boot folders live outside it)")
def tree_path(v: Any) -> str:
    s = _str(v)
    if s.strip("/") == "":
        raise Invalid(
            "the published boot tree cannot be the file system's root: every host's writable /boot would be inside it "
            "(a host could rewrite what the publisher serves). Migrate: set ceph.boot_tree to its own folder, e.g. /tree, "
            "move the published files (boot.ipxe, ipxe/, kernels/, hosts/<h>/boot.ipxe and layers) there, and point "
            "publish.target and the web server at its mount"
        )
    return cephfs_path(s).rstrip("/")


@expects("an http:// URL: a host name, IPv4 or [IPv6] address, an optional port 1-65535, a path of letters, digits and '._~-'; no user, query or fragment")
def url(v: Any) -> str:
    from urllib.parse import urlsplit

    s = _str(v)
    if any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in s):
        raise Invalid("expected a URL without spaces, control or non-ASCII characters")
    try:
        u = urlsplit(s)
        port = u.port
    except ValueError as e:
        raise Invalid(f"expected an http:// URL; this one does not parse ({e})") from None
    if u.scheme == "https":
        raise Invalid("https:// is not supported: cephboot does not configure TLS (no certificate or key keys) and iPXE needs its CA built in; use http:// (host layers are readable only by the web server's group)")
    if u.scheme != "http" or not u.netloc:
        raise Invalid("expected an http:// URL like http://192.0.2.5/boot")
    if u.username is not None or u.password is not None or u.query or u.fragment or "?" in s or "#" in s:
        raise Invalid("expected an http:// URL without user, password, query or fragment")
    if port == 0 or (u.netloc.endswith(":") and port is None):
        raise Invalid("expected a port from 1 to 65535 after ':'")
    host = u.hostname or ""
    if "%" in u.netloc:
        # Python takes an IPv6 zone ("[fe80::1%eth0]") with nearly any character after the '%'; a
        # zone names an interface of the machine that reads the URL, and iPXE, nginx and dnsmasq
        # each read it on another machine
        raise Invalid("expected a host without '%': an IPv6 address with a zone (scope ID) like [fe80::1%eth0] names "
                      "an interface of one machine only; use a global or unique-local IPv6 address, an IPv4 address or a host name")
    if u.netloc.startswith("[") or ":" in host:
        import ipaddress as ip

        try:
            ip.IPv6Address(host)
        except ValueError:
            raise Invalid("expected an IPv6 address inside [ ]") from None
    elif not (_DNS_NAME.fullmatch(host) and not host.replace(".", "").isdigit()):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise Invalid(f"expected a host name or IPv4 address, got {shown(host)}") from None
    if not _URL_PATH.fullmatch(u.path) or any(p in (".", "..") for p in u.path.split("/")) or "//" in u.path:
        raise Invalid("expected a URL path of letters, digits and '._~-' between single '/' (no '.', '..' or '%' escapes): iPXE and nginx must read it alike")
    return s.rstrip("/")


size = _regex(_SIZE, "a size like 512M, 10G or 1T (at most 6 digits)")
tmpfs_size = _regex(_TMPFS_SIZE, "a tmpfs size: a share of the RAM like 50%, or a size like 512M or 2G")
golden_snapshot = _regex(_SNAPSHOT, "a golden image version: the 16 hex digits after '@' that `doit image:NAME` prints")


@expects(f"a group name (lowercase, up to 32 characters) or a numeric gid from 0 to {MAX_GID}")
def group(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_GID:
        raise Invalid(f"expected a gid from 0 to {MAX_GID}")
    s = _str(v)
    if s.isascii() and s.isdigit():
        if len(s) > 10 or int(s) > MAX_GID:
            raise Invalid(f"expected a gid from 0 to {MAX_GID}")
        return s
    if not _GROUP_NAME.fullmatch(s):
        raise Invalid(group.expects)  # type: ignore[attr-defined]
    return s


@expects("a UUID like 4c4c4544-0042-3510-8048-b4c04f4a4d32; not all zeros or all ones (firmware without a UUID reports those)")
def uuid(v: Any) -> str:
    s = _str(v).lower()
    if not _UUID.fullmatch(s):
        raise Invalid("expected a UUID like 4c4c4544-0042-3510-8048-b4c04f4a4d32")
    if s.replace("-", "") in ("0" * 32, "f" * 32):
        raise Invalid("expected a real SMBIOS UUID: all zeros or all ones is what firmware reports when it has none, so every such machine would boot this host")
    return s


def _usable_ipv4(a: "ipaddress.IPv4Address", what: str) -> None:
    for bad, name in ((a.is_unspecified, "unspecified"), (a.is_loopback, "a loopback"), (a.is_multicast, "a multicast"),
                      (a == ipaddress.IPv4Address("255.255.255.255"), "the broadcast"), (a.is_reserved, "a reserved (240.0.0.0/4)")):
        if bad:
            raise Invalid(f"expected {what}; {a} is {name} address")


@expects("'dhcp', or an IPv4 host address with a prefix from /1 to /30 (192.0.2.10/24); not the network or broadcast address, loopback, multicast, reserved or 0.0.0.0")
def address(v: Any) -> str:
    s = _str(v)
    if s == "dhcp":
        return s
    m = re.fullmatch(r"([0-9.]{7,15})/([0-9]{1,2})", s)
    try:
        if not m:
            raise ValueError
        iface = ipaddress.IPv4Interface(s)
    except ValueError:
        raise Invalid("expected 'dhcp' or an IPv4 address with prefix like 192.0.2.10/24") from None
    if not 1 <= iface.network.prefixlen <= 30:
        raise Invalid("expected a prefix from /1 to /30: /0 has no network to reach and /31-/32 no neighbours for a gateway")
    _usable_ipv4(iface.ip, "a host address")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise Invalid("expected a host address with a prefix like 192.0.2.10/24, not the network's own or broadcast address")
    return str(iface)


@expects("an IPv4 address like 192.0.2.1, inside the NIC's static subnet, not its network, broadcast or own address")
def ipv4(v: Any) -> str:
    s = _str(v)
    try:
        if not re.fullmatch(r"[0-9.]{7,15}", s):
            raise ValueError
        a = ipaddress.IPv4Address(s)
    except ValueError:
        raise Invalid("expected an IPv4 address like 192.0.2.1") from None
    _usable_ipv4(a, "a gateway address")
    return str(a)


@expects("an IPv4 address like 192.0.2.5; not 0.0.0.0, loopback, multicast, broadcast or reserved")
def server_ipv4(v: Any) -> str:
    s = _str(v)
    try:
        if not re.fullmatch(r"[0-9.]{7,15}", s):
            raise ValueError
        a = ipaddress.IPv4Address(s)
    except ValueError:
        raise Invalid("expected an IPv4 address like 192.0.2.5") from None
    _usable_ipv4(a, "a server address")
    return str(a)


@expects("an IPv4 network with its prefix, no host bits set (192.0.2.0/24)")
def ipv4_network(v: Any) -> str:
    try:
        return str(ipaddress.IPv4Network(_str(v)))
    except ValueError:
        raise Invalid("expected an IPv4 network like 192.0.2.0/24 (no host bits set)") from None


@expects("[first, last] IPv4 addresses, first <= last ([192.0.2.100, 192.0.2.199])")
def ipv4_range(v: Any) -> list[str]:
    wanted = "expected [first, last] IPv4 addresses, first <= last, like [192.0.2.100, 192.0.2.199]"
    if not isinstance(v, list) or len(v) != 2:
        raise Invalid(wanted)
    first, last = (ipaddress.IPv4Address(ipv4(x)) for x in v)
    if first > last:
        raise Invalid(wanted)
    return [str(first), str(last)]


@expects("an IPv4 monitor address with an optional port 1-65535 (192.0.2.11 or 192.0.2.11:6789); not 0.0.0.0, loopback, multicast or broadcast")
def mon_address(v: Any) -> str:
    s = _str(v)
    m = _MON.fullmatch(s)
    try:
        if not m:
            raise ValueError
        a = ipaddress.IPv4Address(m.group(1))
        if m.group(2) is not None and not 0 < int(m.group(2)) < 65536:
            raise ValueError
    except ValueError:
        raise Invalid("expected a monitor address like 192.0.2.11 or 192.0.2.11:6789 (ASCII digits, port 1-65535)") from None
    _usable_ipv4(a, "a monitor address")
    return s


def positive_int(limit: int, unit: str = "seconds") -> Check:
    @expects(f"a whole number from 1 to {limit}")
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= limit:
            raise Invalid(f"expected a whole number of {unit} from 1 to {limit}")
        return v

    return check


@expects("true or false")
def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid("expected true or false")
    return v


def one_of(*choices: str) -> Check:
    @expects("one of " + ", ".join(f"`{c}`" for c in choices))
    def check(v: Any) -> str:
        s = _str(v)
        if s not in choices:
            raise Invalid("expected one of: " + ", ".join(choices))
        return s

    return check


def safe_text(lang: str, what: str) -> Check:
    """Free text that must be inert in ``lang`` (uses the one quoting function)."""

    @expects(f"{what}: {'printable ASCII, ' if lang in ASCII_ONLY else ''}no quotes, '$', '`', ';', '\\', spaces, control or Unicode format characters or `|&#<>{{}}()*?!~[]`")
    def check(v: Any) -> str:
        s = _str(v)
        if not s:
            raise Invalid(f"expected {what}, got an empty string")
        try:
            quote(s, lang)
        except UnsafeValue as e:
            raise Invalid(f"expected {what}; this value {e}") from None
        return s

    return check


path = safe_text("word", "a file path")


@expects("an absolute " + path.expects.removeprefix("a ") + "; no '.' or '..' parts")  # type: ignore[attr-defined]
def absolute_path(v: Any) -> str:
    s = path(v)
    if not s.startswith("/") or any(p in (".", "..") for p in s.split("/")):
        raise Invalid("expected an absolute path without '.' or '..' parts, like /srv/cephboot/tree: the web server takes it as it is")
    return s


_MACHINE_SECRET = re.compile(rb"[A-Za-z0-9._-]{16,64}")


def machine_secret(data: bytes) -> bytes:
    """The secret in a machine secret file (one line); what firmware and QEMU's -smbios can hold."""
    value = data[:-1] if data.endswith(b"\n") else data
    if not _MACHINE_SECRET.fullmatch(value):
        raise Invalid("expected one line of 16 to 64 letters, digits, '.', '_' or '-' (python -m tasks.examplekeys makes one)")
    return value


@expects("a path relative to hosts/ (like keys/zephyr.keyring): letters, digits and '_.+-' between '/', no '..', not absolute")
def secret_path(v: Any) -> str:
    s = _str(v)
    if s.startswith("/"):
        raise Invalid("expected a path relative to hosts/, not an absolute one: a secret that is published must be one of the site's own (under hosts/)")
    if not _REL_PATH.fullmatch(s) or any(p in (".", "..") for p in s.split("/")):
        raise Invalid(secret_path.expects)  # type: ignore[attr-defined]
    return s


@expects("a file mode like '0640' that grants nothing to others")
def octal_mode(v: Any) -> int:
    if isinstance(v, str) and re.fullmatch(r"0?[0-7]{3}", v):
        v = int(v, 8)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0o770 or v & ~0o770:
        raise Invalid("expected a file mode like '0640' that grants nothing to others")
    return v


def dhcp_in_network(dhcp: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """dhcp.range and dhcp.router must be host addresses of dhcp.network: dnsmasq serves that subnet only."""
    if not dhcp.get("network"):
        return
    net = ipaddress.IPv4Network(dhcp["network"])
    ends = {net.network_address: "network", net.broadcast_address: "broadcast"}
    for key, addresses, serves, wanted in (
            ("range", dhcp.get("range") or [], "dnsmasq would lease no address of this range to a machine there", "[first, last] host addresses"),
            ("router", [dhcp["router"]] if dhcp.get("router") else [], "no machine there could reach it", "a gateway address")):
        for a in map(ipaddress.IPv4Address, addresses):
            why = f"outside dhcp.network {net}: {serves}" if a not in net else f"the {ends[a]} address of dhcp.network {net}" if a in ends else ""
            if why:
                yield key, f"{a} is {why}; expected {wanted} inside it"
                break


class ItemInvalid(Invalid):
    """A list item is wrong: ``index`` says which (its origin may be another file than the list's)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def list_of(item: Check, min_items: int = 0, unique: bool = False, max_items: int = MAX_ITEMS) -> Check:
    inner = getattr(item, "expects", "")

    @expects(f"a list of {min_items}-{max_items} items{', no repeats' if unique else ''}" + (f"; each {inner}" if inner else ""))
    def check(v: Any) -> list[Any]:
        if v is None:
            v = []
        if not isinstance(v, list):
            v = [v] if isinstance(v, (str, int)) and not isinstance(v, bool) else None
            if v is None:
                raise Invalid("expected a list")
        if len(v) > max_items:
            raise Invalid(f"expected at most {max_items} items, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Invalid as e:
                raise ItemInvalid(i, f"item {i} ({shown(x)}): {e}") from None
        if len(out) < min_items:
            raise Invalid(f"expected at least {min_items} item(s)")
        if unique and len(set(out)) != len(out):
            raise Invalid("expected no repeated items")
        return out

    return check


# --- the tables ---------------------------------------------------------------

def _nic(doc: str, optional: bool) -> Section:
    return Section(
        {
            "macs": Field(list_of(mac, 1, unique=True), "One or more MAC addresses, each of one host only; the NIC that has any of them is used.", required=True),
            "address": Field(address, "'dhcp' or a static IPv4 address with prefix (192.0.2.10/24).", required=True),
            "gateway": Field(ipv4, "Default gateway via this NIC (static addresses only)."),
        },
        doc,
        optional=optional,
    )


KRBD_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten")

ROOTFS = Section(
    {
        "source": Field(path, "Where `doit provision --only <host>` gets the root tree: 'debootstrap', or a folder or tarball (relative to hosts/; not `/`, a system folder or a folder holding hosts/).", default="debootstrap"),
        "suite": Field(_regex(_SUITE, "a Debian suite name like bookworm"), "Debian suite that debootstrap installs (from the build machine's apt mirror).", default="bookworm"),
        "packages": Field(list_of(_regex(_PACKAGE, "a Debian package name"), unique=True), "Packages debootstrap adds to minbase; `+packages: [...]` adds more.", default=list(ROOTFS_PACKAGES)),
    },
    "How provisioning builds the root file system written into the image.",
)

HOST = Section(
    {
        "name": Field(host_name, "Host name; always the file name (hosts/nodes/NAME.yaml): if given, in the host's own file only (not in `defaults:` or a profile), and it must match.", default="(file name)"),
        "uuid": Field(uuid, "SMBIOS system UUID, one per host; boot.ipxe routes by it before the MACs."),
        "nics": Section(
            {
                "ceph": _nic("The NIC that reaches the Ceph public network.", optional=False),
                "user": _nic("An optional second NIC for user traffic.", optional=True),
            },
            "Network interfaces by role.",
        ),
        "rbd": Section(
            {
                "pool": Field(rados_name, "RBD pool of the root image.", default="rbd"),
                "namespace": Field(rados_name, "RBD namespace: one per host (two hosts in one pool/namespace could read each other's roots).", default="{name}"),
                "image": Field(rados_name, "RBD image holding the root filesystem.", default="root"),
                "size": Field(size, "Image size for provisioning.", default="10G"),
                "features": Field(list_of(one_of(*KRBD_FEATURES)), "RBD image features for provisioning.", default=["layering", "exclusive-lock"]),
                "reimage": Field(boolean, "Allow provisioning to overwrite a non-empty image.", default=False),
            },
            "The root image.",
        ),
        "client": Field(rados_name, "cephx client id (without 'client.'), one per host; not `admin`, `bootstrap-*`, `crash*`, a daemon type (`mon`, `mgr`, `mds`, `osd`, `rgw`) or `cephboot-*` (the cluster's and cephboot's own clients).", default="{name}"),
        "keyring": Field(secret_path, "Path of the client's keyring file, relative to hosts/: a regular file inside hosts/ (no link leading out), mode 0600, holding the client's cephx key (never the key inline).", default="keys/{name}.keyring"),
        "boot_path": Field(cephfs_path, "CephFS folder mounted read-write at the host's /boot: its own, outside `ceph.boot_tree`, not inside or above another host's.", default="/hosts/{name}"),
        "boot_quota": Field(size, "Most bytes the host may store in its /boot (CephFS quota `ceph.quota.max_bytes`, set by provisioning).", default="1G"),
        "kernel": Field(kernel_version, "Kernel version or 'latest' (newest installed on the build machine).", default="latest"),
        "kernel_args": Field(list_of(safe_text("cmdline", "one kernel argument")), "Extra kernel command line arguments; with root=, rootfstype= and what the loader adds (iPXE's initrd= names, GRUB's BOOT_IMAGE=) the line stays under 2048 bytes (the kernel cuts the rest).", default=[]),
        "root_fs": Field(one_of("ext4", "xfs", "btrfs"), "Root filesystem type.", default="ext4"),
        "map": Section(
            {
                "method": Field(one_of("cli", "sysfs"), "'cli' (rbd device map) or 'sysfs' (/sys/bus/rbd/add_single_major).", default="cli"),
                "options": Field(list_of(_regex(_MAP_OPTION, "a krbd map option like ms_mode=secure"), unique=True), "krbd map options.", default=[]),
                "deadline": Field(positive_int(3600), "Seconds to keep retrying the map before giving up.", default=120),
            },
            "How the initramfs maps the root image.",
        ),
        "link_timeout": Field(positive_int(600), "Seconds to wait for a NIC and its carrier.", default=30),
        "luks": Section(
            {
                "name": Field(rados_name, "dm-crypt mapper name; root becomes /dev/mapper/NAME.", required=True),
                "keyfile": Field(secret_path, "Path of the LUKS key file, relative to hosts/: a non-empty regular file inside hosts/, mode 0600.", required=True),
            },
            "Optional LUKS2 container inside the image.",
            optional=True,
        ),
        "secrets": Section(
            {
                "mode": Field(one_of("machine", "address", "clear"), "'machine': the keys in everything served are sealed to a secret only the machine holds (docs/security.md); 'address': served as they are, but the web server serves the host's key-bearing files only to its reserved DHCP address (a static nics.ceph.address inside dhcp.network; doit warns); 'clear': served as they are to anyone (doit warns).", default="machine"),
                "machine_secret": Field(secret_path, "Path of the machine secret, relative to hosts/: a regular file inside hosts/, mode 0600: the value set in the machine's SMBIOS field.", default="keys/{name}.secret"),
                "smbios_field": Field(one_of(*SMBIOS_FIELDS), "SMBIOS field (/sys/class/dmi/id/NAME) that holds the machine secret.", default="chassis_asset_tag"),
            },
            "How the host's keys travel to it (machine_secret and smbios_field count in machine mode only).",
        ),
        "boot": Section(
            {
                "loader": Field(one_of("ipxe", "grub-secureboot"), "What boots the kernel: 'ipxe' (boot.ipxe over HTTP), or 'grub-secureboot' for UEFI Secure Boot: `doit dnsmasq` gives the host's MACs Debian's signed shim, which starts Debian's signed GRUB, which boots the signed kernel with its generated grub.cfg, all by TFTP from the tree (docs/front-end.md).", default="ipxe"),
            },
            "How the machine's firmware reaches the kernel.",
        ),
        "monolithic": Field(boolean, "Also publish one initrd.img = base + host layer.", default=False),
        "image_root": Field(path, "Image-native mode: the mounted root of this host's image to install into (not `/`, a system folder or a folder holding hosts/).", default=None),
        "rootfs": ROOTFS,
        "root": Section(
            {
                "image": Field(host_name, "Golden image (hosts/images/NAME.yaml) whose current snapshot provisioning clones as this host's root, instead of building one (docs/golden-images.md).", default=None),
                "mode": Field(one_of("stateful", "stateless"), "'stateful': the host's root is its own image (a clone of root.image, or built for it); 'stateless': the host maps root.image's snapshot root.snapshot read-only, shared with every other such host, under a tmpfs overlay that is lost at each reboot.", default="stateful"),
                "snapshot": Field(golden_snapshot, "Stateless hosts only: the version of root.image they boot (the snapshot name `doit image:NAME` prints); changing it moves them.", default=None),
                "overlay_size": Field(tmpfs_size, "Stateless hosts only: most RAM the tmpfs holding the root's writes may use.", default="50%"),
            },
            "Where the host's root comes from.",
        ),
    },
    "A host (site defaults < profiles < host file).",
)

# A golden image: hosts/images/<name>.yaml (docs/golden-images.md).
IMAGE = Section(
    {
        "rootfs": ROOTFS,
        "size": Field(size, "Size of the golden image, and of every clone of it.", default="10G"),
        "pool": Field(rados_name, "RBD pool of the golden image; hosts cloned from it must use the same rbd.pool.", default="rbd"),
        "features": Field(list_of(one_of(*KRBD_FEATURES), unique=True), "RBD image features of the golden image and its clones (checked against the kernel the hosts boot).", default=["layering"]),
    },
    "A golden image (hosts/images/<name>.yaml); its namespace is golden-<name>.",
)

SITE = Section(
    {
        "ceph": Section(
            {
                "fsid": Field(uuid, "Cluster fsid.", required=True),
                "mon_host": Field(list_of(mon_address, 1, unique=True), "Monitor addresses.", required=True),
                "fs_name": Field(rados_name, "CephFS file system that holds the boot tree.", default="boot"),
                "boot_tree": Field(tree_path, "CephFS folder of the published boot tree (publisher-owned; the web server serves it; no host writes it).", default="/tree"),
                "admin_keyring": Field(path, "Admin keyring for provisioning: relative to hosts/, or absolute (like /etc/ceph/ceph.client.admin.keyring); a regular file of this user's or root's, mode 0600, not a link, in folders no other user may write; its first [client.NAME] section is the identity provisioning uses. Read only by the commands that talk to the cluster (provision, verify, image, move-root, rollback-root, rotate, retire); never published.", default=None),
            },
            "The Ceph cluster.",
        ),
        "pxe": Section(
            {
                "http_base": Field(url, "URL under which the web server serves the boot tree.", required=True),
                "uefi_loader": Field(one_of("snponly.efi", "ipxe.efi"), "What `doit dnsmasq` gives x86_64 UEFI machines that PXE-boot without iPXE: snponly.efi (iPXE on the firmware's NIC driver) or ipxe.efi (iPXE's own drivers).", default="snponly.efi"),
            },
            "PXE/iPXE settings.",
        ),
        "dhcp": Section(
            {
                "network": Field(ipv4_network, "The subnet machines PXE-boot on (192.0.2.0/24); `doit dnsmasq` and `doit dhcp-snippets` need it.", default=None),
                "mode": Field(one_of("proxy", "server"), "'proxy': dnsmasq only adds boot information next to the site's DHCP server; 'server': dnsmasq is the DHCP server, with a reservation for every static address in dhcp.network (the ISC/Kea snippets carry those reservations in server mode only).", default="proxy"),
                "range": Field(ipv4_range, "Server mode: [first, last] address for machines without a reservation (unknown machines still get the unknown-machine message); both inside `dhcp.network`, neither its network nor its broadcast address.", default=None),
                "router": Field(ipv4, "Server mode: the gateway handed out (default: dnsmasq's own address); inside `dhcp.network`, not its network or broadcast address.", default=None),
                "tftp_server": Field(server_ipv4, "For `doit dhcp-snippets` (ISC dhcpd, Kea): the TFTP server of the tree's tftp/, handed out as next-server (default: pxe.http_base's host when that is an IPv4 address).", default=None),
            },
            "DHCP/TFTP front end rendered by `doit dnsmasq` (build/site/dnsmasq.conf), or by `doit dhcp-snippets` for a site's existing ISC dhcpd or Kea server.",
            together=dhcp_in_network,
        ),
        "publish": Section(
            {
                "target": Field(path, "Folder of the boot tree (a mounted CephFS), relative to the site: empty, new, or holding the publisher's `.cephboot-tree` marker; never the site, hosts/, build/ or a folder above them.", default="build/publish"),
                "group": Field(group, "Group (web server) that may read host layers.", default=None),
                "secret_mode": Field(octal_mode, "Mode of files that hold keys.", default=0o640),
                "web_root": Field(absolute_path, "Where the web server sees the boot tree, for the generated nginx config (default: the target's absolute path).", default=None),
                "parallel": Field(positive_int(64, "hosts"), "Hosts published at once: their fsyncs overlap (1: one after the other).", default=8),
            },
            "Where and how the boot tree is published.",
        ),
        "kernels": Section(
            {
                "boot_dir": Field(path, "Where kernel images are installed.", default="/boot"),
                "modules_dir": Field(path, "Where kernel modules are installed.", default="/lib/modules"),
                "nic_modules": Field(list_of(rados_name), "NIC driver modules in the full base initrd (hosts with `map.method: cli`).", default=["virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "mlx5_core", "tg3", "r8169"]),
                "lean_nic_modules": Field(list_of(rados_name), "NIC driver modules in the lean base initrd (hosts with `map.method: sysfs`); add the drivers of your sysfs hosts' Ceph NICs (each costs its size in every sysfs boot).", default=["virtio_net", "virtio_pci", "igb"]),
                "compress": Field(one_of("zstd", "gzip", "xz", "lz4"), "Base initrd compressor.", default="zstd"),
            },
            "Base initrd settings.",
        ),
    },
    "Site-wide settings (hosts/site.yaml).",
)


def reference(section: Section = HOST, prefix: str = "") -> list[str]:
    """Markdown table rows: key, default, what the validator accepts, meaning (the README's inventory reference)."""
    rows = []
    for key, spec in section.fields.items():
        full = prefix + key
        if isinstance(spec, Section):
            rows.append(f"| `{full}` | {'*(optional section)*' if spec.optional else ''} | a mapping | {spec.doc} |")
            rows += reference(spec, full + ".")
            continue
        default = "*required*" if spec.required else ("—" if spec.default is None else f"`{_show(spec.default)}`")
        rows.append(f"| `{full}` | {default} | {_cell(getattr(spec.check, 'expects', ''))} | {spec.doc} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) and v > 7 and v in (0o600, 0o640, 0o644):
        return f"0{v:o}"
    return str(v) if v != "" else '""'


def reference_markdown() -> str:
    head = "| key | default | accepted | meaning |\n| --- | --- | --- | --- |\n"
    return (
        "Site settings (`hosts/site.yaml`):\n\n" + head + "\n".join(reference(SITE)) + "\n\n"
        "Host keys (`defaults:` in site.yaml, `hosts/profiles/*.yaml`, `hosts/nodes/<name>.yaml`):\n\n" + head + "\n".join(reference(HOST)) + "\n\n"
        "Golden images (`hosts/images/<name>.yaml`, [docs/golden-images.md](docs/golden-images.md)):\n\n" + head + "\n".join(reference(IMAGE)) + "\n"
    )


def update_readme(readme: str) -> str:
    """``readme`` with the text between the KEYS markers replaced by reference_markdown()."""
    begin = readme.index("\n", readme.index("<!-- BEGIN KEYS")) + 1
    end = readme.index("<!-- END KEYS")
    return readme[:begin] + reference_markdown() + readme[end:]


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:] == ["--update-readme"]:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        readme.write_text(update_readme(readme.read_text()))
    else:
        print(reference_markdown(), end="")
