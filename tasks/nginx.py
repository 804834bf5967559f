"""Generate the nginx server config that serves the published boot tree."""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from doit.exceptions import TaskFailed

from . import inventory
from .fileio import digest, write_if_changed
from .layout import BUILD
from .templating import code_digest, header
from .templating import env as _env
from .inventory import Site
from .quoting import UnsafeValue
from .uptodate import config_changed
from .failures import guarded, host_values, site_values, unsafe

TEMPLATE = "nginx/cephboot.conf.j2"
OUTPUT = BUILD / "site" / "nginx.conf"


def listen_and_prefix(http_base: str) -> tuple[str, str]:
    """nginx `listen` value and URL path prefix for pxe.http_base.

    An IP address in the URL is where the machines connect, so the server listens
    there only; a host name listens on the port on every address.
    """
    url = urlsplit(http_base)
    port = url.port or (443 if url.scheme == "https" else 80)
    host = url.hostname or ""
    try:
        ip = ipaddress.ip_address(host)
        listen = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    except ValueError:
        listen = str(port)
    return listen, url.path.rstrip("/")


def web_root(settings: dict[str, Any], site_root: Path) -> str:
    p = settings["publish"]
    return p["web_root"] or os.path.abspath(site_root / p["target"])


def bound_hosts(site: Site) -> list[tuple[str, list[str]]]:
    """(host, its reserved addresses) of every host in secrets.mode: address, sorted: the web
    server serves their key-bearing files to those addresses only (the inventory checked
    that each has one on the boot network)."""
    network = site.settings["dhcp"]["network"]
    return [(name, [ip for _, _, ip in host.reservations(network)])
            for name, host in sorted(site.hosts.items()) if host.cfg.secrets.mode == "address"]


def nginx_conf(settings: dict[str, Any], site_root: Path, bound: Sequence[tuple[str, list[str]]] = ()) -> str:
    """The server block for the site's ``pxe`` and ``publish`` settings (an https:// base is refused
    by the inventory), with one address-bound folder per ``bound`` host."""
    listen, prefix = listen_and_prefix(settings["pxe"]["http_base"])
    return _env().get_template(TEMPLATE).render(
        header=header(["hosts/site.yaml", "hosts/nodes/"] if bound else ["hosts/site.yaml"], TEMPLATE),
        listen=listen, prefix=prefix, root=web_root(settings, site_root).rstrip("/"), bound=bound,
    )


def render_nginx(site: Site, bound: Sequence[tuple[str, list[str]]]) -> TaskFailed | None:
    """doit action: write build/site/nginx.conf (a value its quoting refuses: one line naming the key, nothing written)."""
    try:
        text = nginx_conf(site.settings, site.root, bound)
    except UnsafeValue as e:
        hosts = (v for name, _ in bound for v in host_values(site.hosts[name]))
        return unsafe("nginx", e, chain(site_values(site.settings), hosts), f"templates/{TEMPLATE}")
    write_if_changed(OUTPUT, text.encode())
    return None


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__, TEMPLATE)


@guarded
def task_nginx() -> Iterator[dict[str, Any]]:
    """nginx config for serving the boot tree (build/site/nginx.conf)."""
    site = inventory.load_for_tasks()
    s = site.settings
    bound = bound_hosts(site)
    yield {
        "basename": "nginx",
        "doc": f"{OUTPUT}: an nginx server block serving the boot tree at {s['pxe']['http_base']}/ (nothing listable; "
               "an address-mode host's keys only to its reserved address)",
        "actions": [(render_nginx, [site, bound])],
        "targets": [str(OUTPUT)],
        "uptodate": [config_changed(digest(s["pxe"]["http_base"], web_root(s, site.root), repr(bound), _code_digest()))],
        "clean": True,
    }
