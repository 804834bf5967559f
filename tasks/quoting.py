"""The one function through which every value reaches shell, iPXE, GRUB, INI, fstab, nginx, dnsmasq, dhcpd or Kea text."""
from __future__ import annotations

import re
import unicodedata

# Characters that are never allowed in a value that lands in generated text:
# they either start command substitution / expansion ($, `), end a quoted
# string (', "), escape (\), separate commands (;) or split lines; C0 and C1
# controls (U+0080-U+009F: 0x9b is an 8-bit CSI to a terminal that shows the file).
_FORBIDDEN = re.compile(r"[;`$'\"\\\x00-\x1f\x7f-\x9f]")
# Beyond Latin-1, by Unicode category: format characters (Cf: bidi overrides such as U+202E, which
# make a file read otherwise than it runs; zero-width U+200B; U+FEFF), line and paragraph separators
# (Zl, Zp: U+2028/U+2029 end a line for some readers), surrogates, private-use and unassigned
# code points (a later Unicode may make them any of the above).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Extra characters each target language treats specially.
_EXTRA = {
    "sh": re.compile(r"(?!)"),  # single-quoted: nothing else is special
    "ipxe": re.compile(r"[\s|&#<>{}]"),  # word splitting, ||/&& chaining, comments
    "ini": re.compile(r"[#\[\]]|^\s|\s$"),  # comments, sections, edge blanks
    "fstab": re.compile(r"[\s#]"),  # fields are whitespace separated
    "word": re.compile(r"[\s|&#<>{}()*?!~\[\]]"),  # one shell/kernel-cmdline word, or a file path
    "cmdline": re.compile(r"[\s|&#<>{}()*?!~\[\]]"),  # one kernel argument: a word, in ASCII (below)
    "dnsmasq": re.compile(r"[\s,#]"),  # one field of a dnsmasq option: commas separate, # comments
    "dhcpd": re.compile(r"[\s#{}]"),  # one ISC dhcpd token or "string": blanks separate, # comments, braces open scopes
    "kea": re.compile(r"[\s#]"),  # one Kea JSON "string" (quotes, backslashes, controls: forbidden above)
    "grub": re.compile(r"(?!)"),  # single-quoted in GRUB's script language, like sh
    "nginx": re.compile(r"[\s{}#]"),  # one nginx token: blanks separate, braces open blocks, # comments ($ and ; above)
    "nginx_regex": re.compile(r"[\s{}#]"),  # the same token, written as a literal inside an nginx (PCRE) regex
}
LANGS = tuple(_EXTRA)
# Printable ASCII only (no letter of any other script either). iPXE, GRUB and the kernel print what
# these files carry on firmware consoles that are not UTF-8 aware (serial, VGA text): a UTF-8 byte
# 0x80-0x9f is an 8-bit C1 control to such a terminal (U+011B is C4 9B: a CSI), and the kernel logs
# its whole command line at boot. Every key that reaches these languages is ASCII by its schema
# (names, versions, MACs, addresses, the URL); kernel_args is checked as "cmdline". Paths
# (publish.web_root, publish.target ...) may name a folder in any script: they reach nginx,
# dnsmasq, fstab and sh text, which read bytes and print nothing to a console, so those languages
# take non-ASCII letters (never the characters above).
ASCII_ONLY = frozenset({"ipxe", "grub", "cmdline", "dhcpd", "kea"})


class UnsafeValue(ValueError):
    """A value that cannot be placed in generated text without changing its meaning.

    ``text`` is the value, ``at`` the index of the offending character (a caller names the
    inventory key that holds it: tasks/blame.py)."""

    def __init__(self, message: str, text: str = "", at: int = -1):
        super().__init__(message)
        self.text = text
        self.at = at


def _shown(char: str) -> str:
    """The character as a message shows it: ASCII escapes for anything not printable ASCII (a
    bidi override echoed to the terminal would reorder the message itself), with its name."""
    if char.isascii():
        return repr(char) if char.isprintable() and not char.isspace() else f"{char!r} (control/space)"
    name = unicodedata.name(char, "") or ("control" if unicodedata.category(char) == "Cc" else "unnamed")
    return f"{ascii(char)} ({name})"


def _bad(text: str, lang: str) -> int:
    """Index of the first character of ``text`` not allowed in ``lang``, or -1."""
    m = _FORBIDDEN.search(text)
    first = m.start() if m else len(text)
    m = _EXTRA[lang].search(text, 0, first)
    first = m.start() if m else first
    if not text.isascii():
        for i, c in enumerate(text[:first]):
            if c > "\x7f" and (lang in ASCII_ONLY or unicodedata.category(c) in _FORBIDDEN_CATEGORIES):
                return i
    return first if first < len(text) else -1


def quote(value: object, lang: str) -> str:
    """Validate ``value`` for ``lang`` and return it in the form that lands in the file.

    ``sh`` and ``grub`` values come back single-quoted, ``nginx_regex`` values with the
    characters a regex reads specially escaped; the other languages have no quoting
    that survives every reader, so their values come back as they are once they
    are known to be inert.  Raises :class:`UnsafeValue` naming the offending
    character otherwise.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise UnsafeValue(f"expected a plain string or number, got {type(value).__name__}")
    text = str(value)
    at = _bad(text, lang)
    if at >= 0:
        char = text[at]
        only = " (printable ASCII only)" if char > "\x7f" and lang in ASCII_ONLY else ""
        raise UnsafeValue(f"contains {_shown(char)}, which is not allowed in {lang} text{only}", text, at)
    if lang in ("sh", "grub"):
        return f"'{text}'"
    return re.escape(text) if lang == "nginx_regex" else text
