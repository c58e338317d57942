/**
 * The admin page: live consoles on every replica (refreshed every 3 s) and locked users.
 *
 * Rows are keyed by console id (users for the locked list) and updated in place, so a refresh does
 * not take keyboard focus away from the button an operator is on.
 */

import { ApiError, api, goToLogin, loadMe } from "./api.js";
import { byId, el, formatBytes, formatDuration, formatTime, permissionBadge, setBanner, setupHeader } from "./ui.js";

const REFRESH_MS = 3000;

let csrf = "";
let pollTimer = 0;
let stopped = false;
/** @type {Map<string, {row: HTMLTableRowElement, update: (c: object) => void}>} */
const consoleRows = new Map();
/** @type {Map<string, {row: HTMLTableRowElement, update: (l: object) => void}>} */
const lockedRows = new Map();

// ---------------------------------------------------------------------------- dialogs and feedback

/**
 * Ask before doing something that cuts an operator's colleague off.
 * @param {{title: string, text: string, ok: string, askReason?: boolean}} opts
 * @returns {Promise<{reason: string}|null>} null when cancelled
 */
function confirmAction(opts) {
    const dialog = byId("confirm");
    byId("confirm-title").textContent = opts.title;
    byId("confirm-text").textContent = opts.text;
    byId("confirm-ok").textContent = opts.ok;
    const reasonInput = byId("confirm-reason");
    reasonInput.value = "";
    byId("confirm-reason-box").hidden = !opts.askReason;
    return new Promise((resolve) => {
        const ok = byId("confirm-ok");
        const cancel = byId("confirm-cancel");
        const done = (value) => {
            ok.removeEventListener("click", onOk);
            cancel.removeEventListener("click", onCancel);
            dialog.removeEventListener("close", onClose);
            if (dialog.open) {
                dialog.close();
            }
            resolve(value);
        };
        const onOk = () => done({ reason: reasonInput.value.trim() });
        const onCancel = () => done(null);
        const onClose = () => done(null);
        ok.addEventListener("click", onOk);
        cancel.addEventListener("click", onCancel);
        dialog.addEventListener("close", onClose);
        dialog.showModal();
        (opts.askReason ? reasonInput : ok).focus();
    });
}

let toastTimer = 0;
/** @param {string} message */
function toast(message) {
    const node = byId("toast");
    node.textContent = message;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
        node.hidden = true;
    }, 4000);
}

/**
 * POST an admin action, report the outcome, refresh the tables.
 * @param {string} path
 * @param {object} body
 * @param {string} success toast text
 */
async function act(path, body, success) {
    try {
        await api(path, { method: "POST", body, csrf });
        toast(success);
    } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
            goToLogin();
            return;
        }
        toast(`Failed: ${err.message}`);
    }
    await refresh();
}

const userPath = (user, action) => `/api/admin/users/${encodeURIComponent(user)}/${action}`;

async function terminateConsole(c) {
    const label = c.server_name || c.server_id;
    if (await confirmAction({
        title: "Terminate console",
        text: `Close the console of ${c.user} on ${label} now?`,
        ok: "Terminate",
    })) {
        await act(`/api/admin/consoles/${encodeURIComponent(c.id)}/terminate`, {}, `Terminated ${c.user}'s console on ${label}.`);
    }
}

async function terminateUser(user) {
    if (await confirmAction({
        title: "Terminate all consoles of a user",
        text: `Close every console ${user} has open, on every replica?`,
        ok: "Terminate all",
    })) {
        await act(userPath(user, "terminate"), {}, `Terminated all consoles of ${user}.`);
    }
}

async function lockUser(user, reason) {
    const body = reason ? { reason } : {};
    await act(userPath(user, "lock"), body, `Locked ${user}; their consoles are closed.`);
}

async function confirmLock(user) {
    const answer = await confirmAction({
        title: "Lock user",
        text: `Lock ${user}? Their consoles close now and they cannot open new ones until unlocked.`,
        ok: "Lock",
        askReason: true,
    });
    if (answer) {
        await lockUser(user, answer.reason);
    }
}

// ---------------------------------------------------------------------------- tables

/** @param {object} c one console from /api/admin/sessions */
function consoleRow(c) {
    const user = el("td", {}, el("span", { class: "cell-main", text: c.user }));
    const serverName = el("span", { class: "cell-main" });
    const serverSub = el("span", { class: "cell-sub" });
    const server = el("td", {}, serverName, el("br"), serverSub);
    const accessBadge = el("span");
    const justification = el("span", { class: "cell-sub", dataset: { testid: "admin-justification" } });
    const access = el("td", {}, accessBadge, el("br"), justification);
    const since = el("td", { class: "hide-sm nowrap" });
    const durationText = el("span");
    const stateText = el("span", { class: "cell-sub" });
    const duration = el("td", { class: "num" }, durationText, el("br"), stateText);
    const down = el("td", { class: "num hide-sm" });
    const up = el("td", { class: "num hide-sm" });
    const client = el("td", { class: "hide-sm mono nowrap" });
    const replica = el("td", { class: "hide-sm" });
    const terminate = el("button", {
        type: "button", class: "btn btn-small btn-danger", dataset: { testid: "admin-terminate" }, text: "Terminate",
    });
    const terminateAll = el("button", {
        type: "button", class: "btn btn-small", dataset: { testid: "admin-terminate-user" },
        text: "Terminate all", title: "Terminate every console of this user",
    });
    const lock = el("button", {
        type: "button", class: "btn btn-small", dataset: { testid: "admin-lock" }, text: "Lock user",
        title: "Lock this user: close their consoles and refuse new ones",
    });
    // Watch it live, view-only (docs/shadowing.md); an observer's own console is not watched in turn.
    const watch = el("a", {
        class: "btn btn-small", dataset: { testid: "admin-watch" }, text: "Watch",
        href: `/join/${encodeURIComponent(c.id)}`, target: "_blank", rel: "noopener",
        title: "Watch this console live, view-only (its owner sees you watching)",
    });
    watch.hidden = Boolean(c.watching);
    // A recorded console's recording, for reviewers: the player follows it live (docs/recording.md).
    const recording = el("a", {
        class: "btn btn-small", dataset: { testid: "admin-recording" }, text: "Recording",
        href: `/recordings/${encodeURIComponent(c.id)}`, target: "_blank", rel: "noopener",
        title: "Play this console's recording (live, up to now)",
    });
    const row = el(
        "tr",
        { dataset: { testid: "admin-row", consoleId: c.id, user: c.user } },
        user, server, access, since, duration, down, up, client, replica,
        el("td", { class: "actions" }, watch, recording, terminate, terminateAll, lock),
    );
    let current = c;
    terminate.addEventListener("click", () => terminateConsole(current));
    terminateAll.addEventListener("click", () => terminateUser(current.user));
    lock.addEventListener("click", () => confirmLock(current.user));
    terminate.setAttribute("aria-label", `Terminate the console of ${c.user} on ${c.server_name || c.server_id}`);
    terminateAll.setAttribute("aria-label", `Terminate all consoles of ${c.user}`);
    lock.setAttribute("aria-label", `Lock ${c.user}`);
    watch.setAttribute("aria-label", `Watch the console of ${c.user} on ${c.server_name || c.server_id}`);

    const update = (next) => {
        current = next;
        serverName.textContent = next.server_name || next.server_id;
        serverSub.textContent = `${next.server_id} · ${next.cloud}`;
        accessBadge.replaceChildren(permissionBadge(next.permission));
        justification.textContent = next.justification || "";
        justification.title = next.justification ? "The reason given for this console" : "";
        since.textContent = formatTime(next.since);
        durationText.textContent = formatDuration(next.seconds);
        // An observer's console (docs/shadowing.md) says so: it watches someone else's, view-only.
        stateText.textContent = next.watching ? `${next.state || ""} · observer` : next.state || "";
        down.textContent = formatBytes(next.bytes_to_browser);
        up.textContent = formatBytes(next.bytes_to_upstream);
        client.textContent = next.client || "–";
        replica.textContent = next.replica || "–";
        recording.hidden = !(roles.reviewer && next.recording);
    };
    update(c);
    return { row, update };
}

/** @param {{user: string, reason: string}} l */
function lockedRow(l) {
    const reason = el("td");
    const unlock = el("button", {
        type: "button", class: "btn btn-small", dataset: { testid: "admin-unlock" }, text: "Unlock",
        "aria-label": `Unlock ${l.user}`,
    });
    unlock.addEventListener("click", () => act(userPath(l.user, "unlock"), {}, `Unlocked ${l.user}.`));
    const row = el(
        "tr",
        { dataset: { testid: "locked-row", user: l.user } },
        el("td", {}, el("span", { class: "cell-main", text: l.user })),
        reason,
        el("td", { class: "actions" }, unlock),
    );
    const update = (next) => {
        reason.textContent = next.reason || "–";
    };
    update(l);
    return { row, update };
}

/**
 * Bring a tbody in line with `items`, reusing rows by key and reordering only when the order changed.
 * @template T
 * @param {HTMLElement} tbody
 * @param {Map<string, {row: HTMLElement, update: (item: T) => void}>} rows
 * @param {T[]} items
 * @param {(item: T) => string} keyOf
 * @param {(item: T) => {row: HTMLElement, update: (item: T) => void}} make
 */
function reconcile(tbody, rows, items, keyOf, make) {
    const seen = new Set();
    const ordered = [];
    for (const item of items) {
        const key = keyOf(item);
        seen.add(key);
        let entry = rows.get(key);
        if (entry) {
            entry.update(item);
        } else {
            entry = make(item);
            rows.set(key, entry);
        }
        ordered.push(entry.row);
    }
    for (const [key, entry] of rows) {
        if (!seen.has(key)) {
            entry.row.remove();
            rows.delete(key);
        }
    }
    const same = ordered.length === tbody.children.length && ordered.every((row, i) => tbody.children[i] === row);
    if (!same) {
        tbody.replaceChildren(...ordered);
    }
}

/** The signed-in user's roles here: admins see the consoles, approvers the access requests. */
const roles = { admin: false, approver: false, reviewer: false };

/** @param {object} r one pending request from /api/access-requests */
function accessRow(r) {
    const approve = el("button", {
        type: "button", class: "btn btn-small btn-primary", dataset: { testid: "access-approve" }, text: "Approve",
    });
    const deny = el("button", {
        type: "button", class: "btn btn-small", dataset: { testid: "access-deny" }, text: "Deny",
    });
    const path = (verdict) => `/api/access-requests/${encodeURIComponent(r.id)}/${verdict}`;
    const label = r.server_name || r.server_id;
    approve.addEventListener("click", () => act(path("approve"), {}, `Approved ${r.user}'s ${r.permission} on ${label}.`));
    deny.addEventListener("click", () => act(path("deny"), {}, `Denied ${r.user}'s request on ${label}.`));
    return el(
        "tr",
        { dataset: { testid: "access-row", requestId: r.id, user: r.user } },
        el("td", {}, el("span", { class: "cell-main", text: r.user })),
        el("td", {}, el("span", { class: "cell-main", text: label }), el("br"),
            el("span", { class: "cell-sub", text: `${r.server_id} · ${r.cloud}` })),
        el("td", {}, permissionBadge(r.permission)),
        el("td", { class: "num", text: formatDuration(r.duration) }),
        el("td", { dataset: { testid: "access-reason" }, text: r.reason }),
        el("td", { class: "actions" }, approve, deny),
    );
}

async function refreshAccess() {
    const data = await api("/api/access-requests");
    const pending = Array.isArray(data.to_decide) ? data.to_decide : [];
    byId("access-rows").replaceChildren(...pending.map(accessRow));
    byId("access-empty").hidden = pending.length > 0;
}

async function refresh() {
    clearTimeout(pollTimer);
    try {
        if (roles.approver) {
            await refreshAccess();
        }
        if (!roles.admin) {
            setBanner(byId("load-error"), null);
            schedule();
            return;
        }
        const data = await api("/api/admin/sessions");
        const consoles = (Array.isArray(data.consoles) ? data.consoles : [])
            .slice()
            .sort((a, b) => a.user.localeCompare(b.user) || a.since - b.since);
        const locked = (Array.isArray(data.locked) ? data.locked : [])
            .slice()
            .sort((a, b) => a.user.localeCompare(b.user));
        reconcile(byId("console-rows"), consoleRows, consoles, (c) => c.id, consoleRow);
        reconcile(byId("locked-rows"), lockedRows, locked, (l) => l.user, lockedRow);
        setBanner(byId("console-empty"), consoles.length ? null : "No console is open right now.");
        byId("locked-empty").hidden = locked.length > 0;
        const users = new Set(consoles.map((c) => c.user)).size;
        byId("console-count").textContent = consoles.length
            ? `${consoles.length} console${consoles.length === 1 ? "" : "s"}, ${users} user${users === 1 ? "" : "s"}`
            : "";
        byId("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
        setBanner(byId("load-error"), null);
    } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
            stopped = true;
            goToLogin();
            return;
        }
        if (err instanceof ApiError && err.status === 403) {
            stopped = true;
            setBanner(byId("load-error"), "This page is for administrators only.");
            return;
        }
        setBanner(byId("load-error"), `The console list could not be refreshed: ${err.message}`);
    }
    schedule();
}

/** Poll while the tab is visible; a hidden tab catches up as soon as it is shown again. */
function schedule() {
    clearTimeout(pollTimer);
    if (!stopped && !document.hidden) {
        pollTimer = setTimeout(refresh, REFRESH_MS);
    }
}

async function main() {
    const me = await loadMe();
    csrf = me.csrf;
    setupHeader(me);
    roles.admin = Boolean(me.admin);
    roles.approver = Boolean(me.approver);
    roles.reviewer = Boolean(me.reviewer);
    byId("access-section").hidden = !roles.approver;
    byId("consoles-section").hidden = !roles.admin;
    byId("locked-section").hidden = !roles.admin;
    if (!roles.admin && !roles.approver) {
        setBanner(byId("load-error"), "This page is for administrators and approvers only.");
        setBanner(byId("console-empty"), null);
        return;
    }
    byId("lock-form").addEventListener("submit", async (event) => {
        event.preventDefault();
        const userInput = byId("lock-user");
        const user = userInput.value.trim();
        if (!user) {
            userInput.focus();
            return;
        }
        await lockUser(user, byId("lock-reason").value.trim());
        userInput.value = "";
        byId("lock-reason").value = "";
    });
    document.addEventListener("visibilitychange", () => {
        if (!document.hidden && !stopped) {
            refresh();
        }
    });
    await refresh();
}

main().catch((err) => {
    console.error(err);
    setBanner(byId("load-error"), "The page could not start. Reload it to try again.");
});
