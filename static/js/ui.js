/**
 * Small DOM helpers. Text always goes in through textContent: server names, reasons and metadata
 * are untrusted, so nothing here ever parses HTML.
 */

import { signOut } from "./api.js";

/**
 * Build an element.
 * @param {string} tag
 * @param {Object<string, any>} [attrs] `class`, `text`, `dataset` ({testid: ...} → data-testid), `hidden`,
 *   `disabled`, and plain attributes (never event handlers: names starting with "on" are refused).
 * @param {...(Node|string|null|undefined|false)} children strings become text nodes
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) {
            continue;
        }
        if (key === "class") {
            node.className = value;
        } else if (key === "text") {
            node.textContent = String(value);
        } else if (key === "dataset") {
            Object.assign(node.dataset, value);
        } else if (key === "hidden" || key === "disabled") {
            node[key] = Boolean(value);
        } else if (key.toLowerCase().startsWith("on") || key === "style") {
            throw new Error(`el(): attribute ${key} is not allowed`);
        } else {
            node.setAttribute(key, value === true ? "" : String(value));
        }
    }
    for (const child of children) {
        if (child === null || child === undefined || child === false) {
            continue;
        }
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
}

/**
 * Look up a required element by id (a missing one is a page bug worth failing loudly on).
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
    const node = document.getElementById(id);
    if (!node) {
        throw new Error(`missing #${id}`);
    }
    return node;
}

/**
 * Fill the shared page header: user, groups, Admin link, Sign out.
 * @param {{user: string, groups: string[], admin: boolean, csrf: string}} me
 */
export function setupHeader(me) {
    byId("me-user").textContent = me.user;
    const groups = byId("me-groups");
    groups.replaceChildren();
    const shown = me.groups.slice(0, 4);
    for (const g of shown) {
        groups.append(el("span", { class: "chip", text: g }));
    }
    if (me.groups.length > shown.length) {
        groups.append(el("span", { class: "chip chip-more", text: `+${me.groups.length - shown.length}` }));
    }
    groups.title = me.groups.join(", ");
    byId("nav-admin").hidden = !(me.admin || me.approver);
    const recordings = document.getElementById("nav-recordings"); // on the pages that link there
    if (recordings) {
        recordings.hidden = !me.reviewer;
    }
    const button = byId("signout");
    button.addEventListener("click", () => {
        button.disabled = true;
        signOut(me.csrf);
    });
}

/**
 * Show or hide a banner element with a message.
 * @param {HTMLElement} node
 * @param {string|null} message null hides it
 */
export function setBanner(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
}

/** @param {number} bytes */
export function formatBytes(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) {
        return "–";
    }
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** @param {number} seconds → "h:mm:ss" or "m:ss" */
export function formatDuration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** @param {number} epoch seconds → local date and time */
export function formatTime(epoch) {
    const date = new Date(epoch * 1000);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/**
 * The permission badge used in lists.
 * @param {string} permission "control" | "view"
 */
export function permissionBadge(permission) {
    return permission === "control"
        ? el("span", { class: "badge badge-control", text: "control" })
        : el("span", { class: "badge badge-view", text: "view-only" });
}
