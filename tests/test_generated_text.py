"""What reaches generated text: the quoting function's rules for Unicode, every template value through
a quoting filter, and the kernel command line measured as the loaders hand it to the kernel."""
from __future__ import annotations

import re
import shlex

import jinja2
import jinja2.nodes as nodes
import pytest

from conftest import Site, a_host_record
from tasks import inventory
from tasks.checks import CMDLINE_SIZE, check_cmdline, kernel_line
from tasks.layout import TEMPLATES
from tasks.model import Host
from tasks.quoting import ASCII_ONLY, LANGS, UnsafeValue, quote

# C1 controls (0x9b: an 8-bit CSI), line/paragraph separators, bidi controls, zero-width and other
# format characters, a surrogate, a private-use and an unassigned code point
NEVER = ["\x85", "\x9b", "\x80", "\u2028", "\u2029", "\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u00ad", "\ud800", "\ue000", "\U000e0001", "\u0378"]


@pytest.mark.parametrize("char", NEVER, ids=[f"U+{ord(c):04X}" for c in NEVER])
@pytest.mark.parametrize("lang", LANGS)
def test_c1_controls_and_unicode_format_characters_are_refused_in_every_language(lang: str, char: str) -> None:
    value = f"/srv/a{char}b"
    with pytest.raises(UnsafeValue) as e:
        quote(value, lang)
    assert e.value.text == value and e.value.at == 6
    assert char not in str(e.value), "the message shows the character escaped, never as it is"


@pytest.mark.parametrize("lang", LANGS)
def test_non_ascii_letters_reach_only_the_languages_that_print_nothing_to_a_console(lang: str) -> None:
    value = "/srv/böot-ĕ"
    if lang in ASCII_ONLY:
        with pytest.raises(UnsafeValue, match=r"'\\xf6' \(LATIN SMALL LETTER O WITH DIAERESIS\), which is not allowed in .* text \(printable ASCII only\)"):
            quote(value, lang)
    else:
        assert quote(value, lang).strip("'").replace("\\", "") == value


def test_ipxe_grub_and_the_kernel_command_line_are_printable_ascii() -> None:
    assert {"ipxe", "grub", "cmdline"} <= ASCII_ONLY
    assert not {"word", "nginx", "dnsmasq", "fstab", "sh"} & ASCII_ONLY  # paths (publish.web_root ...) may be non-ASCII


def test_an_nginx_regex_literal_is_escaped_and_validated() -> None:
    prefix = "/boot.d/x-y~z"
    escaped = quote(prefix, "nginx_regex")
    assert re.fullmatch(escaped, prefix) and not re.fullmatch(escaped, "/bootXd/x-y~z")
    for bad in ("/a b", "/a{1}", "/a;b", "/a$b", "/a#b"):
        with pytest.raises(UnsafeValue):
            quote(bad, "nginx_regex")
    assert quote("[2001:db8::5]:8080", "nginx") == "[2001:db8::5]:8080"


# values the templates get already made by the quoting function, each word or name quoted in Python
PREQUOTED = {"header": "templating.header: every file name through quote(..., 'word')",
             "cmdline": "render.cmdline: every word through quote(..., 'cmdline')",
             "grub_cmdline": "render.grub_cmdline: every word through quote(..., 'cmdline') then 'grub'"}


def _unfiltered(node: nodes.Node) -> list[str]:
    """The parts of one {{ }} expression that can carry a value unquoted ([] when all is quoted)."""
    if isinstance(node, nodes.Filter) and node.name in LANGS:
        return []
    if isinstance(node, nodes.Const):
        return []
    if (isinstance(node, nodes.Filter) and node.name == "join" and all(isinstance(a, nodes.Const) for a in node.args)
            and isinstance(node.node, nodes.Filter) and node.node.name == "map"
            and [getattr(a, "value", None) for a in node.node.args] in ([lang] for lang in LANGS)):
        return []  # each item quoted (map), joined by a literal
    if isinstance(node, nodes.CondExpr):  # a literal or a quoted value on each side
        return _unfiltered(node.expr1) + (_unfiltered(node.expr2) if node.expr2 is not None else [])
    if isinstance(node, nodes.Name) and node.name in PREQUOTED:
        return []
    return [str(node)]


def test_every_value_in_every_template_goes_through_a_quoting_filter() -> None:
    environment = jinja2.Environment()
    found = {}
    templates = sorted(p for p in TEMPLATES.rglob("*") if p.is_file() and "{{" in p.read_text())
    assert len(templates) >= 15, templates
    for path in templates:
        ast = environment.parse(path.read_text())
        for output in ast.find_all(nodes.Output):
            for node in output.nodes:
                if not isinstance(node, nodes.TemplateData):
                    bad = _unfiltered(node)
                    if bad:
                        found.setdefault(str(path.relative_to(TEMPLATES)), []).extend(bad)
    assert not found, f"values that reach generated text without a quoting filter ({', '.join(LANGS)}): {found}"


def test_the_unfiltered_check_finds_an_unfiltered_value() -> None:
    """The check above is not vacuous: it sees a value without a filter, and one behind a filter of another kind."""
    environment = jinja2.Environment()
    source = "listen {{ listen }}; {{ x | upper }} {{ y | nginx }} {{ m | map('dnsmasq') | join(',') }} {{ m | map('upper') | join(',') }} {{ m | join(',') }}"
    outputs = list(environment.parse(source).find_all(nodes.Output))
    flagged = [n for o in outputs for n in o.nodes if not isinstance(n, nodes.TemplateData) and _unfiltered(n)]
    assert len(flagged) == 4


# --- the kernel command line, in bytes, as each loader builds it --------------------------

KVER = "6.1.0-57-amd64"


def _host(**keys: object) -> Host:
    return Host("t", "hosts/nodes/t.yaml", ["hosts/nodes/t.yaml"], a_host_record(**keys))


def test_the_command_line_limit_counts_bytes_not_characters() -> None:
    """The audit's repro: 1952 characters but 4974 bytes once UTF-8. The schema refuses non-ASCII
    kernel_args; this check counts bytes all the same, whatever a later schema lets through."""
    host = _host()
    host.updated(kernel_args=["a=" + "é" * 1000, "b=" + "€" * 950])
    problems: list = []
    check_cmdline(host, KVER, problems)
    length = len(kernel_line(host.cfg, KVER).encode())
    assert length == 2 + 2000 + 1 + 2 + 2850 + len(kernel_line(_host().cfg, KVER)) + 1
    assert [str(p) for p in problems] == [
        f"hosts/nodes/t.yaml: kernel_args: the kernel command line would be {length} bytes (with root=, rootfstype= and what iPXE "
        "puts first); the kernel keeps 2047 and cuts the rest silently"]


@pytest.mark.parametrize("loader", ["ipxe", "grub-secureboot"])
@pytest.mark.parametrize("monolithic", [False, True])
def test_the_limit_is_the_kernels_buffer_exactly(loader: str, monolithic: bool) -> None:
    base = len(kernel_line(_host(boot={"loader": loader}, monolithic=monolithic).cfg, KVER).encode())
    for length, refused in ((CMDLINE_SIZE - 1, False), (CMDLINE_SIZE, True)):
        rest = length - base - 1 - 1000 - 1 - 2  # two arguments: one may hold 1024 characters
        host = _host(boot={"loader": loader}, monolithic=monolithic, kernel_args=["y=" + "v" * 998, "x=" + "v" * rest])
        problems: list = []
        check_cmdline(host, KVER, problems)
        assert len(kernel_line(host.cfg, KVER).encode()) == length
        assert bool(problems) == refused, (length, problems)


def _ipxe_line(text: str) -> str:
    m = re.search(r"^kernel \$\{cephboot-base\}/kernels/[^/]+/vmlinuz (.*) \|\| goto retry$", text, re.M)
    assert m, text
    return "vmlinuz " + m.group(1)  # under UEFI iPXE passes the image's name first


def _grub_line(text: str) -> str:
    m = re.search(r"^if linux (\S+) (.*); then$", text, re.M)
    assert m, text
    return "BOOT_IMAGE=" + " ".join(shlex.split(m.group(1)) + shlex.split(m.group(2)))  # GRUB's words, unquoted


def test_the_measured_line_is_the_line_the_rendered_files_hand_to_the_kernel(the_example_site: Site) -> None:
    """kernel_line() against boot.ipxe (layered: zephyr, boreas; monolithic: notus) and grub.cfg (boreas on grub-secureboot)."""
    with open(the_example_site.hosts / "profiles/secure.yaml", "a") as f:
        f.write("boot:\n  loader: grub-secureboot\n")
    the_example_site.doit("render")
    site = inventory.load(the_example_site.root, use_cache=False)
    seen = set()
    for name, host in site.hosts.items():
        folder = the_example_site.build / "hosts" / name
        grub = host.cfg.boot.loader == "grub-secureboot"
        text = (folder / ("grub.cfg" if grub else "boot.ipxe")).read_text()
        written = _grub_line(text) if grub else _ipxe_line(text)
        assert written == kernel_line(host.cfg, host.cfg.kernel_version), name
        seen.add((grub, host.cfg.monolithic))
    assert seen == {(True, False), (False, False), (False, True)}
