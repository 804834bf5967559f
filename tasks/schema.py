"""What every inventory key means: type, default and check, in one table that also feeds the README."""
from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable

from .quoting import UnsafeValue, quote


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
    """A mapping of keys; ``optional`` sections may be absent or null as a whole."""

    fields: dict[str, "Field | Section"]
    doc: str
    optional: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# --- checks -----------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_RADOS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_KVER = re.compile(r"^(latest|[0-9][A-Za-z0-9._+-]{0,99})$")
_MAP_OPTION = re.compile(r"^[a-z_][a-z0-9_]*(=[A-Za-z0-9_.:/-]+)?$")
_CEPHFS_PATH = re.compile(r"^/([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?$")
_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~%/-]*)?$")
_SIZE = re.compile(r"^[1-9][0-9]*[MGT]$")
_GROUP = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$|^[0-9]+$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{1,99}$")
# SMBIOS strings an operator can set (firmware setup, BMC, QEMU -smbios), as /sys/class/dmi/id names them
SMBIOS_FIELDS = ("chassis_asset_tag", "board_asset_tag", "product_serial", "chassis_serial", "board_serial")
# what the original hand-made setup installs into every root
ROOTFS_PACKAGES = ("initramfs-tools", "linux-image-amd64", "ceph-common", "systemd-sysv", "zstd")


def _str(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise Invalid(f"expected a string, got {type(v).__name__}")
    return str(v)


def _regex(rx: re.Pattern[str], what: str, lower: bool = False) -> Check:
    def check(v: Any) -> str:
        s = _str(v)
        s = s.lower() if lower else s
        if not rx.match(s):
            raise Invalid(f"expected {what}")
        return s

    return check


def host_name(v: Any) -> str:
    return _regex(_NAME, "a host name: lowercase letters, digits and '-', 1-63 characters, safe as a file name")(v)


def mac(v: Any) -> str:
    return _regex(_MAC, "a MAC address like 52:54:00:12:34:56", lower=True)(v)


def rados_name(v: Any) -> str:
    return _regex(_RADOS_NAME, "a Ceph name: letters, digits, '_', '.', '-' (no '/', '@' or spaces)")(v)


def kernel_version(v: Any) -> str:
    return _regex(_KVER, "'latest' or an installed kernel version like 6.1.0-28-amd64")(v)


def cephfs_path(v: Any) -> str:
    s = _regex(_CEPHFS_PATH, "an absolute CephFS path like /hosts/zephyr (letters, digits, '_', '.', '-')")(v)
    if any(part in (".", "..") for part in s.split("/")):
        raise Invalid("expected an absolute CephFS path without '.' or '..' parts")
    return s


def tree_path(v: Any) -> str:
    """A CephFS path where '' and '/' both mean the file system's root."""
    return "" if _str(v) in ("", "/") else cephfs_path(v).rstrip("/")


def url(v: Any) -> str:
    return _regex(_URL, "an http:// or https:// URL without query or spaces")(_str(v).rstrip("/"))


def size(v: Any) -> str:
    return _regex(_SIZE, "a size like 512M, 10G or 1T")(v)


def group(v: Any) -> str:
    return _regex(_GROUP, "a group name or numeric gid")(v)


def uuid(v: Any) -> str:
    s = _str(v)
    try:
        return str(uuidlib.UUID(s))
    except ValueError:
        raise Invalid("expected a UUID like 4c4c4544-0042-3510-8048-b4c04f4a4d32") from None


def address(v: Any) -> str:
    s = _str(v)
    if s == "dhcp":
        return s
    try:
        iface = ipaddress.IPv4Interface(s)
    except ValueError:
        raise Invalid("expected 'dhcp' or an IPv4 address with prefix like 192.0.2.10/24") from None
    if "/" not in s or iface.network.prefixlen == 32 or iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise Invalid("expected 'dhcp' or a host address with a prefix like 192.0.2.10/24")
    return str(iface)


def ipv4(v: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(_str(v)))
    except ValueError:
        raise Invalid("expected an IPv4 address like 192.0.2.1") from None


def mon_address(v: Any) -> str:
    s = _str(v)
    host, _, port = s.partition(":")
    try:
        ipaddress.IPv4Address(host)
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError
    except ValueError:
        raise Invalid("expected a monitor address like 192.0.2.11 or 192.0.2.11:6789") from None
    return s


def positive_int(limit: int, unit: str = "seconds") -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= limit:
            raise Invalid(f"expected a whole number of {unit} from 1 to {limit}")
        return v

    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid("expected true or false")
    return v


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str:
        s = _str(v)
        if s not in choices:
            raise Invalid("expected one of: " + ", ".join(choices))
        return s

    return check


def safe_text(lang: str, what: str) -> Check:
    """Free text that must be inert in ``lang`` (uses the one quoting function)."""

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


def path(v: Any) -> str:
    return safe_text("word", "a file path")(v)


_MACHINE_SECRET = re.compile(rb"[A-Za-z0-9._-]{16,64}")


def machine_secret(data: bytes) -> bytes:
    """The secret in a machine secret file (one line); what firmware and QEMU's -smbios can hold."""
    value = data[:-1] if data.endswith(b"\n") else data
    if not _MACHINE_SECRET.fullmatch(value):
        raise Invalid("expected one line of 16 to 64 letters, digits, '.', '_' or '-' (python -m tasks.examplekeys makes one)")
    return value


def octal_mode(v: Any) -> int:
    if isinstance(v, str) and re.fullmatch(r"0?[0-7]{3}", v):
        v = int(v, 8)
    if isinstance(v, bool) or not isinstance(v, int) or v & ~0o770:
        raise Invalid("expected a file mode like '0640' that grants nothing to others")
    return v


def list_of(item: Check, min_items: int = 0, unique: bool = False) -> Check:
    def check(v: Any) -> list[Any]:
        if v is None:
            v = []
        if not isinstance(v, list):
            v = [v] if isinstance(v, (str, int)) and not isinstance(v, bool) else None
            if v is None:
                raise Invalid("expected a list")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except Invalid as e:
                raise Invalid(f"item {i} ({x!r}): {e}") from None
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
            "macs": Field(list_of(mac, 1, unique=True), "One or more MAC addresses; the NIC that has any of them is used.", required=True),
            "address": Field(address, "'dhcp' or a static IPv4 address with prefix (192.0.2.10/24).", required=True),
            "gateway": Field(ipv4, "Default gateway via this NIC (static addresses only)."),
        },
        doc,
        optional=optional,
    )


HOST = Section(
    {
        "name": Field(host_name, "Host name; always the file name (hosts/nodes/NAME.yaml); if given it must match.", default="(file name)"),
        "uuid": Field(uuid, "SMBIOS system UUID; boot.ipxe routes by it before the MACs."),
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
                "namespace": Field(rados_name, "RBD namespace (one per host).", default="{name}"),
                "image": Field(rados_name, "RBD image holding the root filesystem.", default="root"),
                "size": Field(size, "Image size for provisioning.", default="10G"),
                "features": Field(list_of(one_of("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten")), "RBD image features for provisioning.", default=["layering", "exclusive-lock"]),
                "reimage": Field(boolean, "Allow provisioning to overwrite a non-empty image.", default=False),
            },
            "The root image.",
        ),
        "client": Field(rados_name, "cephx client id (without 'client.').", default="{name}"),
        "keyring": Field(path, "Path of the client's keyring file, relative to hosts/ (mode 0600; never the key inline).", default="keys/{name}.keyring"),
        "boot_path": Field(cephfs_path, "CephFS directory mounted at /boot.", default="{boot_tree}/hosts/{name}"),
        "kernel": Field(kernel_version, "Kernel version or 'latest' (newest installed on the build machine).", default="latest"),
        "kernel_args": Field(list_of(safe_text("word", "one kernel argument")), "Extra kernel command line arguments.", default=[]),
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
                "keyfile": Field(path, "Path of the LUKS key file, relative to hosts/ (mode 0600).", required=True),
            },
            "Optional LUKS2 container inside the image.",
            optional=True,
        ),
        "secrets": Section(
            {
                "mode": Field(one_of("machine", "clear"), "'machine': the keys in everything served are sealed to a secret only the machine holds (docs/security.md); 'clear': served as they are (doit warns).", default="machine"),
                "machine_secret": Field(path, "Path of the machine secret, relative to hosts/ (mode 0600): the value set in the machine's SMBIOS field.", default="keys/{name}.secret"),
                "smbios_field": Field(one_of(*SMBIOS_FIELDS), "SMBIOS field (/sys/class/dmi/id/NAME) that holds the machine secret.", default="chassis_asset_tag"),
            },
            "How the host's keys travel to it (machine_secret and smbios_field count in machine mode only).",
        ),
        "monolithic": Field(boolean, "Also publish one initrd.img = base + host layer.", default=False),
        "image_root": Field(path, "Image-native mode: the mounted root of this host's image to install into.", default=None),
        "rootfs": Section(
            {
                "source": Field(path, "Where `doit provision:<host>` gets the root tree: 'debootstrap', or a folder or tarball (relative to hosts/).", default="debootstrap"),
                "suite": Field(_regex(_SUITE, "a Debian suite name like bookworm"), "Debian suite that debootstrap installs (from the build machine's apt mirror).", default="bookworm"),
                "packages": Field(list_of(_regex(_PACKAGE, "a Debian package name"), unique=True), "Packages debootstrap adds to minbase; `+packages: [...]` adds more.", default=list(ROOTFS_PACKAGES)),
            },
            "How provisioning builds the root file system written into the image.",
        ),
    },
    "A host (site defaults < profiles < host file).",
)

SITE = Section(
    {
        "ceph": Section(
            {
                "fsid": Field(uuid, "Cluster fsid.", required=True),
                "mon_host": Field(list_of(mon_address, 1, unique=True), "Monitor addresses.", required=True),
                "fs_name": Field(rados_name, "CephFS file system that holds the boot tree.", default="boot"),
                "boot_tree": Field(tree_path, "CephFS path of the published boot tree.", default=""),
                "admin_keyring": Field(path, "Admin keyring for provisioning, relative to hosts/.", default=None),
            },
            "The Ceph cluster.",
        ),
        "pxe": Section(
            {"http_base": Field(url, "URL under which the web server serves the boot tree.", required=True)},
            "PXE/iPXE settings.",
        ),
        "publish": Section(
            {
                "target": Field(path, "Directory of the boot tree (a mounted CephFS), relative to the site.", default="build/publish"),
                "group": Field(group, "Group (web server) that may read host layers.", default=None),
                "secret_mode": Field(octal_mode, "Mode of files that hold keys.", default=0o640),
                "web_root": Field(path, "Where the web server sees the boot tree, for the generated nginx config (default: the target's absolute path).", default=None),
                "parallel": Field(positive_int(64, "hosts"), "Hosts published at once: their fsyncs overlap (1: one after the other).", default=8),
            },
            "Where and how the boot tree is published.",
        ),
        "kernels": Section(
            {
                "boot_dir": Field(path, "Where kernel images are installed.", default="/boot"),
                "modules_dir": Field(path, "Where kernel modules are installed.", default="/lib/modules"),
                "nic_modules": Field(list_of(rados_name), "NIC driver modules in the base initrd.", default=["virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "mlx5_core", "tg3", "r8169"]),
                "compress": Field(one_of("zstd", "gzip", "xz", "lz4"), "Base initrd compressor.", default="zstd"),
            },
            "Base initrd settings.",
        ),
    },
    "Site-wide settings (hosts/site.yaml).",
)


def reference(section: Section = HOST, prefix: str = "") -> list[str]:
    """Markdown table rows: key, default, meaning (the README's inventory reference)."""
    rows = []
    for key, spec in section.fields.items():
        full = prefix + key
        if isinstance(spec, Section):
            rows.append(f"| `{full}` | {'*(optional section)*' if spec.optional else ''} | {spec.doc} |")
            rows += reference(spec, full + ".")
            continue
        default = "*required*" if spec.required else ("—" if spec.default is None else f"`{_show(spec.default)}`")
        rows.append(f"| `{full}` | {default} | {spec.doc} |")
    return rows


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) and v > 7 and v in (0o600, 0o640, 0o644):
        return f"0{v:o}"
    return str(v) if v != "" else '""'


def reference_markdown() -> str:
    head = "| key | default | meaning |\n| --- | --- | --- |\n"
    return (
        "Site settings (`hosts/site.yaml`):\n\n" + head + "\n".join(reference(SITE)) + "\n\n"
        "Host keys (`defaults:` in site.yaml, `hosts/profiles/*.yaml`, `hosts/nodes/<name>.yaml`):\n\n" + head + "\n".join(reference(HOST)) + "\n"
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
