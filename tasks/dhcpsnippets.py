"""Snippets for a site's existing ISC dhcpd or Kea DHCPv4 server: the answers dnsmasq gives, in their syntax."""
from __future__ import annotations

from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from . import inventory
from .bootnet import Answers, answers, grub_routes, tftp_exposes_keys
from .fileio import digest, write_if_changed
from .inventory import Site
from .quoting import UnsafeValue
from .layout import BUILD
from .templating import code_digest, header
from .templating import env as _env
from .uptodate import config_changed
from .failures import guarded, host_values, site_values, unsafe

# server -> {template: output}; each output is a fragment the site includes in its own config
SNIPPETS: dict[str, dict[str, Path]] = {
    "dhcpd": {"dhcpd/dhcpd.conf.j2": BUILD / "site" / "dhcpd.conf"},
    "kea": {
        "kea-dhcp4/dhcp4.json.j2": BUILD / "site" / "kea-dhcp4" / "dhcp4.json",
        "kea-dhcp4/subnet4.json.j2": BUILD / "site" / "kea-dhcp4" / "subnet4.json",
    },
}
WHERE = {"dhcpd": "inside the boot network's subnet declaration", "kea": "in Dhcp4 and in the boot network's subnet4 entry"}


def snippet_text(template: str, net: Answers) -> str:
    return _env().get_template(template).render(
        header=header(["hosts/site.yaml", "hosts/nodes/"], template),
        network=str(net.network),
        address=str(net.network.network_address),
        netmask=str(net.network.netmask),
        ipxe_url=net.ipxe_url,
        loaders=net.loaders,
        tftp_server=net.tftp_server,
        reservations=net.reservations,
        secure_macs=net.secure_macs,
        shim=net.shim,
        # Kea refuses one address in two reservations unless told it is meant
        shared_addresses=any(len(r.macs) > 1 for r in net.reservations),
    )


def render_snippets(site: Site, server: str) -> TaskFailed | None:
    """doit action: write ``server``'s snippets under build/site/."""
    s = site.settings
    if not s["dhcp"]["network"]:
        return TaskFailed(f"cephboot: dhcp-snippets:{server}: set dhcp.network in hosts/site.yaml (the subnet machines PXE-boot on, e.g. 192.0.2.0/24)")
    if why := tftp_exposes_keys(site):
        return TaskFailed(f"cephboot: dhcp-snippets:{server}: {why}")
    net = answers(site)
    if net.tftp_server is None:
        return TaskFailed(f"cephboot: dhcp-snippets:{server}: set dhcp.tftp_server in hosts/site.yaml (the TFTP server's IPv4 address, "
                          f"handed out as next-server; pxe.http_base's host {s['pxe']['http_base']!r} is not an IPv4 address)")
    texts = {}
    for template, out in SNIPPETS[server].items():
        try:
            texts[out] = snippet_text(template, net)
        except UnsafeValue as e:
            values = chain(site_values(s), (v for h in site.hosts.values() for v in host_values(h)))
            return unsafe(f"dhcp-snippets:{server}", e, values, f"templates/{template}")
    for out, text in texts.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_if_changed(out, text.encode())
    return None


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__, *(t for outputs in SNIPPETS.values() for t in sorted(outputs)))


@guarded
def task_dhcp_snippets() -> Iterator[dict[str, Any]]:
    """Snippets for an existing ISC dhcpd or Kea server (`doit dhcp-snippets:dhcpd`, `:kea`)."""
    site = inventory.load_for_tasks()
    s = site.settings
    dhcp = s["dhcp"]
    # the answers depend on the settings and, in server mode, on every host's static addresses
    hosts = repr(sorted((n, h.cfg.nics) for n, h in site.hosts.items())) if dhcp["mode"] == "server" else ""
    hosts += repr(grub_routes(site))  # the MACs that get shim
    yield {"basename": "dhcp-snippets", "name": None,
           "doc": "snippets for a site's existing ISC dhcpd or Kea server (docs/front-end.md)"}
    for server, outputs in SNIPPETS.items():
        yield {
            "basename": "dhcp-snippets",
            "name": server,
            "doc": f"{', '.join(map(str, outputs.values()))}: cephboot's answers on {dhcp['network'] or '(dhcp.network unset)'} to include {WHERE[server]}",
            "actions": [(render_snippets, [site, server])],
            "targets": [str(o) for o in outputs.values()],
            "task_dep": ["publish:tftp"],  # the first stages the snippets name
            "uptodate": [config_changed(digest(server, repr(dhcp), repr(s["pxe"]), hosts, _code_digest()))],
            "clean": True,
        }
