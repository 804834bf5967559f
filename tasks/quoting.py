"""The one function through which every value reaches shell, iPXE, GRUB, INI, fstab, dnsmasq, dhcpd or Kea text."""
from __future__ import annotations

import re

# Characters that are never allowed in a value that lands in generated text:
# they either start command substitution / expansion ($, `), end a quoted
# string (', "), escape (\), separate commands (;) or split lines.
_FORBIDDEN = re.compile(r"[;`$'\"\\\x00-\x1f\x7f]")
# Extra characters each target language treats specially.
_EXTRA = {
    "sh": re.compile(r"(?!)"),  # single-quoted: nothing else is special
    "ipxe": re.compile(r"[\s|&#<>{}]"),  # word splitting, ||/&& chaining, comments
    "ini": re.compile(r"[#\[\]]|^\s|\s$"),  # comments, sections, edge blanks
    "fstab": re.compile(r"[\s#]"),  # fields are whitespace separated
    "word": re.compile(r"[\s|&#<>{}()*?!~\[\]]"),  # one shell/kernel-cmdline word
    "dnsmasq": re.compile(r"[\s,#]"),  # one field of a dnsmasq option: commas separate, # comments
    "dhcpd": re.compile(r"[\s#{}]"),  # one ISC dhcpd token or "string": blanks separate, # comments, braces open scopes
    "kea": re.compile(r"[\s#]"),  # one Kea JSON "string" (quotes, backslashes, controls: forbidden above)
    "grub": re.compile(r"(?!)"),  # single-quoted in GRUB's script language, like sh
}
LANGS = tuple(_EXTRA)


class UnsafeValue(ValueError):
    """A value that cannot be placed in generated text without changing its meaning."""


def quote(value: object, lang: str) -> str:
    """Validate ``value`` for ``lang`` and return it in the form that lands in the file.

    ``sh`` and ``grub`` values come back single-quoted; the other languages have no quoting
    that survives every reader, so their values come back as they are once they
    are known to be inert.  Raises :class:`UnsafeValue` naming the offending
    character otherwise.
    """
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise UnsafeValue(f"expected a plain string or number, got {type(value).__name__}")
    text = str(value)
    bad = _FORBIDDEN.search(text) or _EXTRA[lang].search(text)
    if bad:
        char = bad.group(0)
        shown = repr(char) if char.isprintable() and not char.isspace() else f"{char!r} (control/space)"
        raise UnsafeValue(f"contains {shown}, which is not allowed in {lang} text")
    return f"'{text}'" if lang in ("sh", "grub") else text
