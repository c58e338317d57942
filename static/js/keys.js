/**
 * Key combinations the browser would keep for itself (Ctrl-Alt-Del, Alt-Tab, ...) and typing text
 * into consoles that have no clipboard (most hypervisor consoles).
 *
 * Each key is sent with its X keysym and its DOM `code`: noVNC uses the code to send a scan code
 * (QEMU extended key event) when the server supports it, which is what hypervisor consoles prefer.
 */

import KeyTable from "/novnc/core/input/keysym.js";
import keysyms from "/novnc/core/input/keysymdef.js";

/** @typedef {{keysym: number, code: string}} Key */

const key = (keysym, code) => ({ keysym, code });
const CTRL = key(KeyTable.XK_Control_L, "ControlLeft");
const ALT = key(KeyTable.XK_Alt_L, "AltLeft");
const SHIFT = key(KeyTable.XK_Shift_L, "ShiftLeft");
const SUPER = key(KeyTable.XK_Super_L, "MetaLeft");

/** @type {{label: string, keys: Key[]}[]} the key menu, in display order */
export const COMBOS = [
    { label: "Ctrl-Alt-Del", keys: [CTRL, ALT, key(KeyTable.XK_Delete, "Delete")] },
    { label: "Ctrl-Alt-Backspace", keys: [CTRL, ALT, key(KeyTable.XK_BackSpace, "Backspace")] },
    ...[1, 2, 3, 4, 5, 6, 7].map((n) => ({
        label: `Ctrl-Alt-F${n}`,
        keys: [CTRL, ALT, key(KeyTable[`XK_F${n}`], `F${n}`)],
    })),
    { label: "Alt-Tab", keys: [ALT, key(KeyTable.XK_Tab, "Tab")] },
    { label: "Alt-F4", keys: [ALT, key(KeyTable.XK_F4, "F4")] },
    { label: "Ctrl-Esc", keys: [CTRL, key(KeyTable.XK_Escape, "Escape")] },
    { label: "Ctrl-Shift-Esc", keys: [CTRL, SHIFT, key(KeyTable.XK_Escape, "Escape")] },
    { label: "Windows key", keys: [SUPER] },
    { label: "Print Screen", keys: [key(KeyTable.XK_Print, "PrintScreen")] },
];

/**
 * Press the keys in order, release them in reverse.
 * @param {{sendKey: (keysym: number, code: string|null, down?: boolean) => void}} rfb
 * @param {Key[]} keys
 */
export function sendCombo(rfb, keys) {
    for (const k of keys) {
        rfb.sendKey(k.keysym, k.code, true);
    }
    for (const k of [...keys].reverse()) {
        rfb.sendKey(k.keysym, k.code, false);
    }
}

// Characters that need Shift on a US layout. Consoles that map keysyms to scan codes (QEMU) may
// otherwise type the unshifted key; an extra Shift is harmless where the server handles it itself.
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?');

/** The most characters typeText sends at once: a paste of a whole file is almost certainly a mistake. */
export const MAX_TYPED = 4096;

/**
 * Characters typed per second. Consoles without a clipboard (QEMU's, a BIOS, a login prompt) read a
 * keyboard: a burst of thousands of key events overruns their buffers and loses or repeats keys.
 */
export const TYPE_RATE = 50;

/**
 * Type text as key presses, at TYPE_RATE characters per second. Newlines become Return and tabs Tab;
 * other control characters are skipped.
 * @param {{sendKey: (keysym: number, code: string|null, down?: boolean) => void}} rfb
 * @param {string} text
 * @param {{limit?: number, stillWanted?: () => boolean}} [opts] at most `limit` characters; stop as soon
 *     as `stillWanted` says no (the console closed, or turned view-only)
 * @returns {Promise<number>} the number of characters typed
 */
export async function typeText(rfb, text, opts = {}) {
    const limit = Math.min(MAX_TYPED, opts.limit || MAX_TYPED);
    const stillWanted = opts.stillWanted || (() => true);
    let typed = 0;
    for (const ch of [...text.replace(/\r\n?/g, "\n")].slice(0, limit)) {
        if (typed > 0) {
            await new Promise((resolve) => setTimeout(resolve, 1000 / TYPE_RATE));
        }
        if (!stillWanted()) {
            break;
        }
        if (ch === "\n") {
            rfb.sendKey(KeyTable.XK_Return, "Enter");
        } else if (ch === "\t") {
            rfb.sendKey(KeyTable.XK_Tab, "Tab");
        } else {
            const cp = ch.codePointAt(0);
            if (cp < 0x20 || cp === 0x7f) {
                continue;
            }
            const shift = (ch >= "A" && ch <= "Z") || SHIFTED.has(ch);
            if (shift) {
                rfb.sendKey(SHIFT.keysym, SHIFT.code, true);
            }
            // No code: a scan code would name a physical key, and the layout is the remote's.
            rfb.sendKey(keysyms.lookup(cp), null);
            if (shift) {
                rfb.sendKey(SHIFT.keysym, SHIFT.code, false);
            }
        }
        typed += 1;
    }
    return typed;
}
