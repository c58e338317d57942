/**
 * The recordings page: recorded consoles this reviewer may watch, searched by user, server, time range
 * and typed text (the gateway searches typed text only where the reviewer may read it). Each row links
 * to the player; a typed-text hit links to the moment it was typed.
 *
 * The search is a POST: typed text may be a password and must stay out of addresses (proxy logs,
 * browser history). The other filters are kept in the address, so a search can be linked to.
 */

import { ApiError, api, goToLogin, loadMe } from "./api.js";
import { byId, el, formatBytes, formatDuration, formatTime, setBanner, setupHeader } from "./ui.js";

const FIELDS = ["id", "user", "server", "since", "until", "text"];
/** Filters that may appear in the address (all but the typed text). */
const LINKABLE = FIELDS.filter((name) => name !== "text");
let csrf = "";

/** datetime-local value (local time) ↔ epoch seconds, for the API. */
function toEpoch(value) {
    const ms = Date.parse(value);
    return Number.isFinite(ms) ? String(ms / 1000) : "";
}

/** The form as the API's filters (empty fields left out). */
function filters() {
    const out = {};
    for (const name of FIELDS) {
        const value = byId(`q-${name}`).value.trim();
        if (value) {
            out[name] = name === "since" || name === "until" ? toEpoch(value) : value;
        }
    }
    return out;
}

function playerLink(r, t = null) {
    const hash = t === null ? "" : `#t=${t}`;
    return `/recordings/${encodeURIComponent(r.id)}${hash}`;
}

function row(r) {
    const state = r.live ? "live" : r.sealed ? "sealed" : "unsealed";
    const stateCell = el("td", { class: "integrity-cell", dataset: { status: state } },
        { live: "Live", sealed: "Sealed", unsealed: "Not sealed (truncated?)" }[state]);
    const hits = el("div", { class: "cell-sub" });
    for (const t of (r.hits || []).slice(0, 5)) {
        hits.append(el("a", { href: playerLink(r, t), dataset: { testid: "recording-hit" }, text: formatDuration(t / 1000) }), " ");
    }
    return el(
        "tr",
        { dataset: { testid: "recording-row", recordingId: r.id, user: r.user } },
        el("td", {}, el("span", { class: "cell-main", text: r.user })),
        el("td", {}, el("span", { class: "cell-main", text: r.server_name || r.server_id }), el("br"),
            el("span", { class: "cell-sub", text: `${r.server_id} · ${r.cloud}` })),
        el("td", { class: "nowrap", text: formatTime(r.started) }),
        el("td", { class: "num", text: typeof r.duration === "number" ? formatDuration(r.duration / 1000) : "–" }),
        el("td", { class: "num hide-sm", text: formatBytes(r.size) }),
        stateCell,
        el("td", { class: "actions" },
            el("a", { class: "btn btn-small btn-primary", href: playerLink(r), dataset: { testid: "recording-play" }, text: "Play" }),
            hits),
    );
}

async function search() {
    const body = filters();
    const params = new URLSearchParams(LINKABLE.filter((name) => body[name]).map((name) => [name, body[name]]));
    history.replaceState(null, "", params.toString() ? `?${params}` : location.pathname);
    try {
        const data = await api("/api/recordings/search", { method: "POST", body, csrf });
        const recordings = Array.isArray(data.recordings) ? data.recordings : [];
        byId("rows").replaceChildren(...recordings.map(row));
        setBanner(byId("empty"), recordings.length ? null : "No recording you may watch matches.");
        byId("count").textContent = `${recordings.length} recording${recordings.length === 1 ? "" : "s"}`;
        setBanner(byId("load-error"), null);
    } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
            goToLogin();
            return;
        }
        setBanner(byId("load-error"), `The recordings could not be listed: ${err.message}`);
    }
}

/** Fill the form from the address, so a search can be bookmarked or linked to. */
function fromAddress() {
    const params = new URLSearchParams(location.search);
    for (const name of LINKABLE) {
        const value = params.get(name);
        if (value === null) {
            continue;
        }
        if (name === "since" || name === "until") {
            const date = new Date(Number(value) * 1000);
            if (!Number.isNaN(date.getTime())) {
                const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
                byId(`q-${name}`).value = local.toISOString().slice(0, 16);
            }
        } else {
            byId(`q-${name}`).value = value;
        }
    }
}

async function main() {
    const me = await loadMe();
    csrf = me.csrf;
    setupHeader(me);
    fromAddress();
    byId("search").addEventListener("submit", (event) => {
        event.preventDefault();
        search();
    });
    await search();
}

main().catch((err) => {
    console.error(err);
    setBanner(byId("load-error"), "The page could not start. Reload it to try again.");
});
