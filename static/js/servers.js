/** The server list: what this user may open, with a filter that narrows as they type. */

import { ApiError, api, goToLogin, loadMe } from "./api.js";
import { byId, el, permissionBadge, setBanner, setupHeader } from "./ui.js";

/** @type {{row: HTMLTableRowElement, haystack: string, cloud: string}[]} */
let entries = [];

/** Colour of a server status (ECS / Nova status words). */
function statusTone(status) {
    const s = String(status || "").toUpperCase();
    if (s === "ACTIVE" || s === "RUNNING") {
        return "ok";
    }
    if (s === "ERROR" || s === "DELETED" || s === "SOFT_DELETED" || s === "FAULT") {
        return "bad";
    }
    if (s === "SHUTOFF" || s === "STOPPED" || s === "PAUSED" || s === "SUSPENDED" || s === "SHELVED" ||
        s === "SHELVED_OFFLOADED") {
        return "neutral";
    }
    return "warn";
}

/** @param {string} cloud @param {string} id */
export function consolePath(cloud, id) {
    return `/console/${encodeURIComponent(cloud)}/${encodeURIComponent(id)}`;
}

/**
 * @param {{cloud: string, id: string, name: string, status: string, availability_zone: string|null,
 *          permission: string, available: boolean, unavailable_reason: string|null}} s
 * @param {boolean} showCloud
 */
function serverRow(s, showCloud) {
    const name = s.name || s.id;
    const nameCell = el("td", {}, el("span", { class: "cell-main", text: name }));
    let action;
    if (s.permission === "none") {
        action = null; // nothing to open until an access request is approved
    } else if (s.available) {
        action = el("a", {
            class: "btn btn-primary btn-small",
            href: consolePath(s.cloud, s.id),
            dataset: { testid: "server-open" },
            "aria-label": `Open the console of ${name}`,
            text: "Open",
        });
    } else {
        const reason = s.unavailable_reason || "The console is not available";
        nameCell.append(el("span", {
            class: "unavailable-reason",
            dataset: { testid: "server-unavailable-reason" },
            text: reason,
        }));
        action = el("button", {
            type: "button",
            class: "btn btn-small",
            disabled: true,
            title: reason,
            dataset: { testid: "server-open" },
            "aria-label": `The console of ${name} is not available: ${reason}`,
            text: "Open",
        });
    }
    return el(
        "tr",
        {
            class: s.available ? "" : "is-unavailable",
            dataset: { testid: "server-row", cloud: s.cloud, serverId: s.id, available: String(s.available) },
        },
        nameCell,
        el("td", { class: "hide-sm" }, el("span", { class: "status-dot", dataset: { tone: statusTone(s.status) }, text: s.status || "–" })),
        el("td", { class: "hide-sm", text: s.availability_zone || "–" }),
        el("td", { class: "id-cell hide-sm", text: s.id }),
        showCloud ? el("td", { class: "hide-sm", text: s.cloud }) : null,
        el("td", {}, permissionBadge(s.permission)),
        el("td", { class: "actions" }, action, s.requestable ? requestButton(s, name) : null),
    );
}

// ---------------------------------------------------------------------------- access requests

/** The server an access request is being written for. */
let requesting = null;
let csrf = "";

/** @param {{requestable: {permission: string, max_grant: number}}} s @param {string} name */
function requestButton(s, name) {
    const button = el("button", {
        type: "button",
        class: "btn btn-small",
        dataset: { testid: "server-request" },
        "aria-label": `Request ${s.requestable.permission} on ${name}`,
        text: `Request ${s.requestable.permission}`,
    });
    button.addEventListener("click", () => openRequest(s, name));
    return button;
}

/** Durations offered, in seconds; only those the rule allows. */
const DURATIONS = [[900, "15 minutes"], [3600, "1 hour"], [4 * 3600, "4 hours"], [8 * 3600, "8 hours"]];

function openRequest(s, name) {
    requesting = s;
    byId("request-what").textContent = `${s.requestable.permission} on ${name}, approved by an approver of this server.`;
    const select = byId("request-duration");
    const allowed = DURATIONS.filter(([seconds]) => seconds <= s.requestable.max_grant);
    const options = allowed.length ? allowed : [[s.requestable.max_grant, `${Math.round(s.requestable.max_grant / 60)} minutes`]];
    select.replaceChildren(...options.map(([seconds, label]) => el("option", { value: String(seconds), text: label })));
    byId("request-status").textContent = "";
    byId("request-reason").value = "";
    byId("request-dialog").showModal();
    byId("request-reason").focus();
}

function setupRequests() {
    byId("request-cancel").addEventListener("click", () => byId("request-dialog").close());
    byId("request-form").addEventListener("submit", async (event) => {
        event.preventDefault();
        const s = requesting;
        const reason = byId("request-reason").value.trim();
        if (!s || !reason) {
            byId("request-status").textContent = "Say why you need it.";
            return;
        }
        try {
            await api("/api/access-requests", {
                method: "POST",
                csrf,
                body: { cloud: s.cloud, server_id: s.id, duration: Number(byId("request-duration").value), reason },
            });
        } catch (err) {
            if (err instanceof ApiError && err.status === 401) {
                goToLogin();
                return;
            }
            byId("request-status").textContent = err.message;
            return;
        }
        byId("request-dialog").close();
        setBanner(byId("request-sent"), `Requested ${s.requestable.permission} on ${s.name || s.id}. `
            + "Reload this list once an approver has decided.");
    });
}

function applyFilter() {
    const words = byId("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const onlyCloud = byId("cloud-filter").value;
    let shown = 0;
    for (const { row, haystack, cloud } of entries) {
        const match = (!onlyCloud || cloud === onlyCloud) && words.every((w) => haystack.includes(w));
        row.hidden = !match;
        shown += match ? 1 : 0;
    }
    const total = entries.length;
    byId("count").textContent = total === 0 ? "" : shown === total
        ? `${total} server${total === 1 ? "" : "s"}`
        : `${shown} of ${total} servers`;
    const empty = byId("empty");
    if (total === 0) {
        setBanner(empty, "There are no servers you may open. If you expected some, ask your administrator.");
    } else if (shown === 0) {
        setBanner(empty, "No server matches the filter.");
    } else {
        setBanner(empty, null);
    }
}

async function load() {
    const refresh = byId("refresh");
    refresh.disabled = true;
    setBanner(byId("load-error"), null);
    if (entries.length === 0) {
        setBanner(byId("empty"), "Loading servers…");
    }
    try {
        const data = await api("/api/servers");
        const servers = Array.isArray(data.servers) ? data.servers : [];
        const errors = Array.isArray(data.errors) ? data.errors : [];
        const showCloud = new Set(servers.map((s) => s.cloud)).size > 1;
        byId("cloud-col").hidden = !showCloud;
        showCloudChoice(showCloud ? [...new Set(servers.map((s) => s.cloud))].sort() : []);
        entries = servers.map((s) => ({
            row: serverRow(s, showCloud),
            haystack: [s.name, s.id, s.availability_zone, s.cloud].filter(Boolean).join(" ").toLowerCase(),
            cloud: s.cloud,
        }));
        byId("rows").replaceChildren(...entries.map((e) => e.row));
        showCloudErrors(errors);
        applyFilter();
    } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
            goToLogin();
            return;
        }
        setBanner(byId("load-error"), `The server list could not be loaded: ${err.message}`);
        if (entries.length === 0) {
            setBanner(byId("empty"), null);
        }
    } finally {
        refresh.disabled = false;
    }
}

/** With several clouds, a choice of one; the choice survives a refresh while that cloud is still listed. */
function showCloudChoice(clouds) {
    const select = /** @type {HTMLSelectElement} */ (byId("cloud-filter"));
    const chosen = clouds.includes(select.value) ? select.value : "";
    select.replaceChildren(el("option", { value: "", text: "All clouds" }),
        ...clouds.map((c) => el("option", { value: c, text: c })));
    select.value = chosen;
    byId("cloud-filter-box").hidden = clouds.length === 0;
}

/** @param {{cloud: string, message: string}[]} errors */
function showCloudErrors(errors) {
    const box = byId("errors");
    box.replaceChildren(...errors.map((e) => el("p", {}, el("strong", { text: `${e.cloud}: ` }),
        `the server list is incomplete: ${e.message}`)));
    box.hidden = errors.length === 0;
}

async function main() {
    const me = await loadMe();
    setupHeader(me);
    csrf = me.csrf;
    setupRequests();
    byId("locked").hidden = !me.locked;
    const filter = byId("filter");
    filter.addEventListener("input", applyFilter);
    filter.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && filter.value) {
            filter.value = "";
            applyFilter();
        }
    });
    document.addEventListener("keydown", (event) => {
        const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
        if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
            event.preventDefault();
            filter.focus();
        }
    });
    byId("cloud-filter").addEventListener("change", applyFilter);
    byId("refresh").addEventListener("click", load);
    await load();
}

main().catch((err) => {
    console.error(err);
    setBanner(byId("load-error"), "The page could not start. Reload it to try again.");
});
