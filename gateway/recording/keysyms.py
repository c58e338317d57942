"""X keysyms to the characters they type, for the typed-text index of a recording.

Only key-down events type anything. Modifiers (Shift, Control, Alt, Meta, Super, Hyper, AltGr, locks)
type nothing themselves: the keysym of the key pressed with them already says which character it was
(noVNC sends "A", not Shift+"a"). While Control, Alt, Meta, Super or Hyper is held, a key is a shortcut
(Ctrl+C), not text, so it types nothing either; AltGr (ISO_Level3_Shift) is how many layouts type @, €
or {, so it does not count as held.

Mapped: Latin-1 keysyms (0x20-0x7e, 0xa0-0xff, equal to their code point), Unicode keysyms
(0x01000000 + code point), the legacy keysyms noVNC sends for other scripts and symbols (Cyrillic, Greek,
Latin-2, kana, the euro sign, ...: keysymdef.py), the keypad's digits and operators, Return/KP_Enter
("\\n"), Tab ("\\t") and BackSpace (removes the last character typed, so "passx<BS>word" is found as
"password"). Anything else (arrows, function keys, dead keys) types nothing.
"""

from __future__ import annotations

from typing import Final

from gateway.recording.keysymdef import LEGACY

__all__ = ["BACKSPACE", "TypedKeys", "keysym_char"]

BACKSPACE: Final = "\b"  # what TypedKeys.press returns for BackSpace: the caller removes a character

_RETURN: Final = 0xFF0D
_KP_ENTER: Final = 0xFF8D
_TAB: Final = 0xFF09
_KP_TAB: Final = 0xFF89
_BACKSPACE: Final = 0xFF08
_KP_SPACE: Final = 0xFF80
# Control_L/R, Meta_L/R, Alt_L/R, Super_L/R, Hyper_L/R: while held, a key is a shortcut.
_SHORTCUT_MODIFIERS: Final = frozenset(
    {0xFFE3, 0xFFE4, 0xFFE7, 0xFFE8, 0xFFE9, 0xFFEA, 0xFFEB, 0xFFEC, 0xFFED, 0xFFEE}
)
# KP_Multiply .. KP_9 (0xffaa-0xffb9) and KP_Equal (0xffbd) type their ASCII character.
_KEYPAD: Final = {0xFFAA + i: c for i, c in enumerate("*+,-./0123456789")} | {0xFFBD: "="}


def keysym_char(keysym: int) -> str:
    """The character a keysym types, "\\n"/"\\t" for Return/Tab, BACKSPACE, or "" for none."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000020 <= keysym <= 0x0110FFFF:
        code = keysym - 0x01000000
        if 0xD800 <= code <= 0xDFFF or 0x7F <= code < 0xA0:
            return ""  # surrogates and C1 controls type nothing readable
        return chr(code)
    if keysym in (_RETURN, _KP_ENTER):
        return "\n"
    if keysym in (_TAB, _KP_TAB):
        return "\t"
    if keysym == _BACKSPACE:
        return BACKSPACE
    if keysym == _KP_SPACE:
        return " "
    return LEGACY.get(keysym) or _KEYPAD.get(keysym, "")


class TypedKeys:
    """Key events in, typed characters out: tracks which shortcut modifiers are held."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: set[int] = set()

    def press(self, keysym: int, down: bool) -> str:
        """The character this event types ("" for none; BACKSPACE to remove the last one)."""
        if keysym in _SHORTCUT_MODIFIERS:
            if down:
                self._held.add(keysym)
            else:
                self._held.discard(keysym)
            return ""
        if not down or self._held:
            return ""
        return keysym_char(keysym)
