"""AE titles (PS3.5 VR AE): checked once, the same way for the node and its destinations."""

from __future__ import annotations


def validate_ae_title(
    value: object, *, name: str = "ae_title", error: type[ValueError] = ValueError
) -> str:
    """Return ``value`` if it is a valid AE title, else raise ``error`` naming ``name``.

    Valid: 1 to 16 printable ASCII characters, not all spaces, no backslash.
    """
    if not isinstance(value, str):
        raise error(f"{name} must be a str, got {type(value).__name__}")
    if not value.strip() or len(value) > 16:
        raise error(f"{name} {value!r} must hold 1 to 16 characters, not all spaces")
    if "\\" in value or any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise error(f"{name} {value!r} may only hold printable ASCII characters and no backslash")
    return value
