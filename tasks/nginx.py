"""Generate the nginx server config that serves the published boot tree."""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from doit.exceptions import TaskFailed

from . import inventory
from .fileio import digest, files_digest, write_if_changed
from .render import BUILD, TEMPLATES, _env, header
from .uptodate import config_changed

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


class TlsMissing(ValueError):
    """An https:// base without the certificate or key to serve it."""


def tls_files(settings: dict[str, Any], site_root: Path) -> dict[str, str] | None:
    """Certificate and key paths for an https:// pxe.http_base (None for http://); refused when the site names none."""
    pxe = settings["pxe"]
    if urlsplit(pxe["http_base"]).scheme != "https":
        return None
    missing = [k for k in ("tls_certificate", "tls_key") if not pxe[k]]
    if missing:
        raise TlsMissing(
            f"cephboot: pxe.http_base {pxe['http_base']} is https://, but hosts/site.yaml names no {' and no '.join('pxe.' + k for k in missing)}: "
            "the generated nginx server needs the certificate and its key (paths as the web server sees them). "
            "Name them, or use an http:// base (Debian's iPXE builds fetch over HTTP only)"
        )
    return {"certificate": _abs(pxe["tls_certificate"], site_root), "key": _abs(pxe["tls_key"], site_root)}


def _abs(rel: str, site_root: Path) -> str:
    return rel if rel.startswith("/") else os.path.abspath(site_root / "hosts" / rel)


def nginx_conf(settings: dict[str, Any], site_root: Path) -> str:
    """The server block for the site's ``pxe`` and ``publish`` settings; TlsMissing for https:// without its files."""
    listen, prefix = listen_and_prefix(settings["pxe"]["http_base"])
    return _env().get_template(TEMPLATE).render(
        header=header(["hosts/site.yaml"], TEMPLATE), listen=listen, prefix=prefix, root=web_root(settings, site_root).rstrip("/"),
        tls=tls_files(settings, site_root),
    )


def render_nginx(settings: dict[str, Any], site_root: Path) -> TaskFailed | None:
    """doit action: write build/site/nginx.conf."""
    try:
        text = nginx_conf(settings, site_root)
    except TlsMissing as e:
        return TaskFailed(str(e))
    write_if_changed(OUTPUT, text.encode())
    return None


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return files_digest([Path(__file__), TEMPLATES / TEMPLATE])


def task_nginx() -> Iterator[dict[str, Any]]:
    """nginx config for serving the boot tree (build/site/nginx.conf)."""
    site = inventory.load_for_tasks()
    s = site.settings
    yield {
        "basename": "nginx",
        "doc": f"{OUTPUT}: an nginx server block serving the boot tree at {s['pxe']['http_base']}/ (nothing listable)",
        "actions": [(render_nginx, [s, site.root])],
        "targets": [str(OUTPUT)],
        "uptodate": [config_changed(digest(s["pxe"]["http_base"], str(s["pxe"]["tls_certificate"]), str(s["pxe"]["tls_key"]),
                                           web_root(s, site.root), _code_digest()))],
        "clean": True,
    }
