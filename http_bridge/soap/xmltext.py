"""Writing XML text: escaping, and the characters XML 1.0 cannot carry at all.

The bridge writes its envelopes and WSDL as text (not through ElementTree) because QName
values such as ``type="xsd:long"`` need prefixes it chooses and declares itself.
"""

from __future__ import annotations

import re

__all__ = ["NotRepresentable", "attr", "clean", "text"]

# XML 1.0 §2.2 Char: anything else (NUL, most C0 controls, lone surrogates, U+FFFE/U+FFFF)
# cannot appear in a document, not even as a character reference.
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                       "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"})


class NotRepresentable(ValueError):
    """A string holds a character that XML 1.0 cannot carry (NUL, a lone surrogate...)."""


def text(value: str) -> str:
    """``value`` as element content; raises NotRepresentable rather than alter the data."""
    found = _ILLEGAL.search(value)
    if found is not None:
        raise NotRepresentable(f"U+{ord(found.group()):04X} at offset {found.start()} cannot be sent in XML")
    return value.translate(_TEXT)  # \\r as a reference: a parser would turn a bare one into \\n


def attr(value: str) -> str:
    """``value`` as a double-quoted attribute value (quotes not included)."""
    return clean(value).translate(_ATTR)


def clean(value: str) -> str:
    """``value`` with the characters XML cannot carry replaced (for documentation, not data)."""
    return _ILLEGAL.sub("\ufffd", value)
