/**
 * The console page: one server's screen through noVNC, over the gateway's WebSocket.
 *
 * Life of a connection: open the socket (channel.js) → the gateway's hello tells us the server and
 * our permission → start noVNC on the channel → ... → the socket closes with a code and reason,
 * which pick the failure screen. Reconnect always opens a NEW socket: the gateway fetches a fresh
 * one-time console URL from the cloud for each one.
 */

import RFB from "/novnc/core/rfb.js";
import { api, loadMe } from "./api.js";
import { consoleSocketURL, joinSocketURL, openConsoleChannel } from "./channel.js";
import { COMBOS, MAX_TYPED, sendCombo, typeText } from "./keys.js";
import { byId, el } from "./ui.js";

/**
 * Failure titles by close code; the gateway's reason text goes underneath. The gateway defines its codes
 * once (gateway/consoles/codes.py); a test checks this table against it.
 */
const CLOSE_TITLES = {
    1000: "Console closed",
    1001: "Console closed",
    1011: "Gateway error",
    4000: "Closed by an administrator",
    4001: "You signed out",
    4002: "Account locked",
    4003: "Permission changed",
    4004: "Sign-in expired",
    4005: "Closed by moderation",
    4006: "The watched console ended",
    4012: "Gateway restarting",
    4400: "Protocol error",
    4401: "Not signed in",
    4403: "Not allowed",
    4404: "No such server",
    4407: "Fresh sign-in required",
    4408: "Closed after inactivity",
    4409: "Maximum session length reached",
    4410: "Console link expired",
    4423: "Server not available",
    4428: "A reason is required",
    4429: "Limit reached",
    4431: "Join refused",
    4432: "No answer to the join request",
    4500: "Console proxy closed",
    4502: "Connection to the console lost",
    4520: "Cloud API problem",
    4530: "Console proxy unreachable",
    4531: "Console proxy TLS failure",
    4532: "Console address refused",
    4534: "Recording failed",
};

/** Used when the gateway gave no reason (or the connection dropped before it could). */
const DEFAULT_REASONS = {
    1000: "The console ended the session.",
    1001: "The gateway went away.",
    4401: "Your sign-in is missing or has expired. Sign in again to open the console.",
    4410: "The one-time console link from the cloud expired. Reconnect to get a new one.",
    4012: "The gateway is restarting. Reconnect in a moment.",
};
const LOST_TITLE = "Connection lost";
const LOST_REASON = "The connection to the gateway dropped. Check your network, then reconnect.";

/** The policy rule wants a reason (justification) before the console opens: the page asks for one. */
const JUSTIFICATION_CODE = 4428;
/** The rule wants a more recent or stronger sign-in for control (step-up). */
const STEP_UP_CODE = 4407;
/** Close codes after which signing in again is the way forward. */
const SIGN_IN_CODES = new Set([4001, 4004, 4401, 4407]);
/** Codes that end the session by design rather than by a fault; see setState(). */
const NORMAL_CODES = new Set([1000, 1001]);

const state = {
    cloud: "",
    serverId: "",
    /** @type {import("./channel.js").ConsoleChannel|null} the live channel; events of older ones are ignored */
    channel: null,
    /** @type {RFB|null} */
    rfb: null,
    viewOnly: false,
    connected: false,
    /** noVNC reported an unclean disconnect (it hit a protocol error and closed the socket itself). */
    rfbFailed: false,
    /** Detail of a security failure, reported by noVNC before it disconnects. */
    securityReason: "",
    /** Failure title when this page (not the gateway) ended the connection. */
    clientFailTitle: "",
    scale: readScalePreference(),
    idleDeadline: 0,
    idleTimer: 0,
    /** The reason the user gave, sent with every (re)connection once asked for. */
    justification: "",
    /** What the gateway asked for before a 4407: {method, max_age, acr_values}. */
    stepUp: null,
    /** The rule's clipboard policy, from the hello (the gateway enforces it; the page offers what passes). */
    clipboard: { copy: true, paste: true, max: null },
    /** A moderated console's input is held at the gateway (waiting for, or missing, a moderator). */
    held: false,
    /** This page watches a moderated console as one of its moderators: the id of that console. */
    moderating: "",
    csrf: "",
    /** Observer mode (/join/{console_id}): the live console this page watches, view-only. */
    join: "",
    /** This page's own console (from the hello): the join link and the owner's approvals name it. */
    consoleId: "",
    watchNoticeTimer: 0,
};

const ui = {};

function readScalePreference() {
    try {
        return localStorage.getItem("novnc-gw.scale") !== "0";
    } catch {
        return true;
    }
}

/** /console/{cloud}/{server_id} → [cloud, serverId], or null for a malformed address. */
function parsePath() {
    const parts = location.pathname.split("/");
    if (parts.length !== 4 || parts[1] !== "console" || !parts[2] || !parts[3]) {
        return null;
    }
    try {
        return [decodeURIComponent(parts[2]), decodeURIComponent(parts[3])];
    } catch {
        return null;
    }
}

/** /join/{console_id} → the console to watch, or "" for any other address. */
function parseJoinPath() {
    const parts = location.pathname.split("/");
    if (parts.length !== 3 || parts[1] !== "join" || !parts[2]) {
        return "";
    }
    try {
        return decodeURIComponent(parts[2]);
    } catch {
        return "";
    }
}

/**
 * Status element: data-state is connecting | connected | disconnected | failed. "disconnected"
 * is a normal close (code 1000/1001); every other close is "failed", with the code in data-close-code.
 * @param {"connecting"|"connected"|"disconnected"|"failed"} value
 * @param {number|null} [code]
 */
function setState(value, code = null) {
    const labels = {
        connecting: "Connecting…",
        connected: state.viewOnly ? "Connected (view only)" : "Connected",
        disconnected: "Disconnected",
        failed: "Disconnected",
    };
    ui.status.dataset.state = value;
    ui.status.textContent = labels[value];
    if (code === null) {
        delete ui.status.dataset.closeCode;
    } else {
        ui.status.dataset.closeCode = String(code);
    }
    state.connected = value === "connected";
    ui.connecting.hidden = value !== "connecting";
    updateControls();
}

/** Enable exactly the buttons that make sense now. */
function updateControls() {
    const input = state.connected && !state.viewOnly && !state.held;
    ui.cad.disabled = !input;
    ui.keys.disabled = !input;
    ui.clipboard.disabled = !input;
    ui.viewOnlyBadge.hidden = !state.viewOnly;
    if (!input) {
        closeKeysMenu(false);
        if (ui.clipDialog.open) {
            ui.clipDialog.close();
        }
    }
}

function setServerName(name, detail) {
    ui.name.textContent = name;
    ui.meta.textContent = detail || "";
    document.title = `${name} · Console`;
}

// ---------------------------------------------------------------------------- connection

function connect() {
    teardown();
    state.viewOnly = false;
    state.rfbFailed = false;
    state.securityReason = "";
    state.clientFailTitle = "";
    state.stepUp = null;
    showModeration(null);
    showWatchers({ watchers: [], events: [] });
    ui.failure.hidden = true;
    ui.justify.hidden = true;
    clearIdleWarning();
    setState("connecting");

    const url = state.join
        ? joinSocketURL(state.join)
        : consoleSocketURL(state.cloud, state.serverId, state.justification);
    const channel = openConsoleChannel(url, {
        hello: (hello) => channel === state.channel && onHello(channel, hello),
        idleWarning: (seconds) => channel === state.channel && showIdleWarning(seconds),
        notice: (notice) => {
            if (channel === state.channel && notice.type === "step_up") {
                state.stepUp = notice;
            } else if (channel === state.channel && notice.type === "moderation") {
                showModeration(notice);
            } else if (channel === state.channel && notice.type === "join_pending") {
                ui.connectingText.textContent = `Waiting for ${notice.owner} to let you watch their console…`;
            } else if (channel === state.channel && notice.type === "watchers") {
                showWatchers(notice);
            }
        },
        close: (info) => channel === state.channel && onClosed(info),
    });
    state.channel = channel;
}

/** Drop the current connection on purpose: no failure screen for it. */
function teardown() {
    const { channel, rfb } = state;
    state.channel = null;
    state.rfb = null;
    if (rfb) {
        rfb.disconnect();
    } else if (channel) {
        channel.close();
    }
}

/**
 * The hello says the console is recorded (docs/recording.md): the page says so before the first frame,
 * since the hello comes before any RFB byte, and keeps saying it while the console is open.
 * @param {{required?: boolean, input?: boolean}|null} recording null: not recorded
 */
function showRecorded(recording) {
    ui.recorded.hidden = !recording;
    ui.recorded.dataset.input = recording && recording.input ? "yes" : "no";
    ui.recorded.textContent = !recording ? "" : recording.input
        ? "This session is recorded, including what you type"
        : "This session is recorded";
}

/**
 * @param {import("./channel.js").ConsoleChannel} channel
 * @param {{permission?: string, server?: {name?: string, id?: string, cloud?: string}}|null} hello
 */
function onHello(channel, hello) {
    state.viewOnly = Boolean(hello && hello.permission === "view");
    state.clipboard = { copy: true, paste: true, max: null, ...((hello && hello.clipboard) || {}) };
    const server = (hello && hello.server) || {};
    const reason = hello && typeof hello.justification === "string" ? hello.justification : "";
    ui.justification.textContent = reason ? `Reason: ${reason}` : "";
    ui.justification.hidden = !reason;
    showRecorded((hello && hello.recording) || null);
    if (typeof server.name === "string" && server.name) {
        setServerName(server.name, `${server.id || state.serverId} · ${server.cloud || state.cloud}`);
    }
    ui.connectingText.textContent = "Starting the console…";
    state.consoleId = hello && typeof hello.console_id === "string" ? hello.console_id : "";
    showObserver(hello);
    showModeration((hello && hello.moderation) || null);
    const observer = (hello && hello.observer) || {};
    state.moderating = observer.moderator && typeof observer.console_id === "string" ? observer.console_id : "";
    ui.moderationEnd.hidden = !state.moderating;
    if (state.moderating) {
        showModeration({
            state: "moderator",
            held: false,
            reason: "You moderate this console: its operator can type while you watch, and you can end it.",
        });
    }

    let rfb;
    try {
        rfb = new RFB(ui.screen, channel, { shared: true });
    } catch (err) {
        console.error("noVNC failed to start", err);
        state.channel = null;
        channel.close();
        showFailure("The viewer could not start", String((err && err.message) || err), null, "failed");
        return;
    }
    rfb.viewOnly = state.viewOnly;
    rfb.scaleViewport = state.scale;
    rfb.resizeSession = false;
    rfb.focusOnClick = true;
    rfb.background = "#0b0f14";
    rfb.addEventListener("connect", () => {
        if (rfb === state.rfb) {
            setState("connected");
            rfb.focus({ preventScroll: true });
        }
    });
    rfb.addEventListener("disconnect", (event) => {
        if (rfb === state.rfb) {
            state.rfbFailed = !event.detail.clean;
        }
    });
    rfb.addEventListener("securityfailure", (event) => {
        state.securityReason = (event.detail && event.detail.reason) || "";
    });
    rfb.addEventListener("credentialsrequired", () => {
        // The gateway presents consoles without a VNC password; a prompt here means a misconfigured upstream.
        state.clientFailTitle = "Console wants a password";
        state.securityReason = "The console asked for a VNC password, which the gateway does not support.";
        rfb.disconnect();
    });
    rfb.addEventListener("clipboard", (event) => {
        ui.clipRemote.value = event.detail.text;
        ui.clipRemoteBox.hidden = false;
    });
    rfb.addEventListener("desktopname", (event) => {
        if (!hello || !server.name) {
            setServerName(event.detail.name || state.serverId, `${state.serverId} · ${state.cloud}`);
        }
    });
    state.rfb = rfb;
    channel.deliverQueued();
    updateControls();
}

/** @param {import("./channel.js").CloseInfo} info */
function onClosed(info) {
    state.rfb = null;
    state.channel = null;
    clearIdleWarning();
    if (info.byClient) {
        // Nobody on this page asked for that (teardown() detaches first): noVNC gave up on the stream.
        const reason = state.securityReason || "The viewer could not understand the data from the console.";
        showFailure(state.clientFailTitle || "Console protocol error", reason, null, "failed");
        return;
    }
    const code = info.code;
    if (code === JUSTIFICATION_CODE) {
        askJustification(info.reason || "Give a reason to open this console.");
        return;
    }
    if (code === STEP_UP_CODE && state.stepUp && state.stepUp.method === "oidc") {
        // Through the identity provider again, and back here: this page, its reason kept for the session.
        const params = new URLSearchParams({ next: location.pathname });
        if (Number.isInteger(state.stepUp.max_age)) {
            params.set("max_age", String(state.stepUp.max_age));
        }
        if (Array.isArray(state.stepUp.acr_values) && state.stepUp.acr_values.length) {
            params.set("acr_values", state.stepUp.acr_values.join(" "));
        }
        setState("connecting");
        ui.connectingText.textContent = "Sending you to sign in again…";
        location.assign(`/auth/oidc/start?${params}`);
        return;
    }
    const title = CLOSE_TITLES[code] || LOST_TITLE;
    const reason = info.reason || state.securityReason || DEFAULT_REASONS[code] ||
        (CLOSE_TITLES[code] ? "" : LOST_REASON);
    showFailure(title, reason, code, NORMAL_CODES.has(code) ? "disconnected" : "failed");
}

/**
 * @param {string} title
 * @param {string} reason
 * @param {number|null} code
 * @param {"disconnected"|"failed"} kind
 */
function showFailure(title, reason, code, kind) {
    setState(kind, code);
    ui.failTitle.textContent = title;
    ui.failReason.textContent = reason;
    ui.failReason.hidden = !reason;
    ui.failCode.textContent = code === null ? "" : `Close code ${code}`;
    ui.failSignIn.hidden = !SIGN_IN_CODES.has(code);
    ui.failSignIn.href = "/login?next=" + encodeURIComponent(location.pathname);
    ui.failure.hidden = false;
    ui.failReconnect.focus();
}

/** @param {string} expected the gateway's words for what the rule wants */
function askJustification(expected) {
    setState("failed", JUSTIFICATION_CODE);
    ui.justifyExpected.textContent = expected;
    ui.justifyText.value = state.justification;
    ui.justify.hidden = false;
    ui.justifyText.focus();
}

/** The reason survives a trip through the identity provider (step-up), for this tab only. */
function justificationKey() {
    return `novnc-gw.justification:${location.pathname}`;
}

function setupJustification() {
    try {
        state.justification = sessionStorage.getItem(justificationKey()) || "";
    } catch {
        state.justification = "";
    }
    byId("justify-form").addEventListener("submit", (event) => {
        event.preventDefault();
        state.justification = ui.justifyText.value.trim();
        try {
            sessionStorage.setItem(justificationKey(), state.justification);
        } catch {
            // Private mode: a fresh sign-in (step-up) will ask again.
        }
        connect();
    });
}

// ---------------------------------------------------------------------------- moderation

/**
 * A moderated console's state, from the hello and every "moderation" notice: the banner says it in the
 * gateway's words (waiting for N moderators, moderated by X, paused because X left), and the input
 * controls follow it. The gateway holds the input itself; the page only explains.
 * @param {{state: string, held: boolean, reason: string}|null} moderation null: not moderated
 */
function showModeration(moderation) {
    state.held = Boolean(moderation && moderation.held);
    ui.moderation.hidden = !moderation;
    ui.moderation.dataset.state = moderation ? moderation.state : "";
    ui.moderation.textContent = moderation ? moderation.reason : "";
    updateControls();
}

/** A moderator watching a moderated console may end it (from any replica: the gateway relays the end). */
function setupModeratorEnd() {
    ui.moderationEnd.addEventListener("click", async () => {
        if (!state.moderating) {
            return;
        }
        ui.moderationEnd.disabled = true;
        try {
            await api(`/api/consoles/${encodeURIComponent(state.moderating)}/end`, {
                method: "POST",
                csrf: state.csrf,
            });
        } catch (err) {
            ui.moderationEnd.disabled = false;
            ui.moderation.hidden = false;
            ui.moderation.dataset.state = "error";
            ui.moderation.textContent = (err && err.data && err.data.error) || "The console could not be ended.";
        }
    });
}

// ---------------------------------------------------------------------------- shadowing

/**
 * Observer mode says whose console this is and that it is view-only; the owner's page offers the join
 * link instead (docs/shadowing.md).
 * @param {{observer?: {owner?: string}}|null} hello
 */
function showObserver(hello) {
    const owner = hello && hello.observer && typeof hello.observer.owner === "string" ? hello.observer.owner : "";
    ui.observerBadge.textContent = owner ? `Watching ${owner}'s console · view only` : "";
    ui.observerBadge.hidden = !owner;
    ui.copyJoin.hidden = Boolean(state.join) || !state.consoleId;
}

const WATCH_EVENTS = {
    requested: "asks to watch this console",
    approved: "may now watch this console",
    refused: "will not watch this console",
    joined: "started watching this console",
    left: "stopped watching this console",
};

/**
 * The owner's page: who watches (names, since when), the requests waiting for an answer, and a notice
 * for each change. The gateway sends the whole list with every change, so a lost notice heals itself.
 * @param {{watchers: Array<{id: string, name: string, status: string, since: number|null}>,
 *          events: Array<{event: string, name: string}>}} notice
 */
function showWatchers(notice) {
    const watchers = Array.isArray(notice.watchers) ? notice.watchers : [];
    ui.watcherList.replaceChildren(...watchers.map(watcherItem));
    ui.watchers.hidden = watchers.length === 0;
    const said = (Array.isArray(notice.events) ? notice.events : [])
        .filter((e) => WATCH_EVENTS[e.event])
        .map((e) => `${e.name} ${WATCH_EVENTS[e.event]}.`);
    clearTimeout(state.watchNoticeTimer);
    ui.watchNotice.textContent = said.join(" ");
    ui.watchNotice.hidden = said.length === 0;
    if (said.length) {
        state.watchNoticeTimer = setTimeout(() => {
            ui.watchNotice.hidden = true;
        }, 10000);
    }
}

/** @param {{id: string, name: string, status: string, since: number|null}} w */
function watcherItem(w) {
    const item = el("li", { dataset: { testid: "watcher", status: w.status, name: w.name } }, el("strong", { text: w.name }));
    if (w.status === "joined" && w.since) {
        item.append(` since ${new Date(w.since * 1000).toLocaleTimeString()}`);
    } else if (w.status === "pending") {
        item.append(" asks to watch");
        for (const [decision, label] of [["approve", "Allow"], ["refuse", "Refuse"]]) {
            const button = el("button", {
                type: "button", class: "btn btn-dark btn-small", dataset: { testid: `watcher-${decision}` }, text: label,
                "aria-label": `${label} ${w.name} to watch this console`,
            });
            button.addEventListener("click", () => decideJoin(w.id, decision, button));
            item.append(" ", button);
        }
    } else {
        item.append(" joining…");
    }
    return item;
}

/** The owner's answer, over HTTP (CSRF), so it works whichever replica the observer reached. */
async function decideJoin(watchId, decision, button) {
    button.disabled = true;
    try {
        await api(`/api/consoles/${encodeURIComponent(state.consoleId)}/watchers/${encodeURIComponent(watchId)}`, {
            method: "POST",
            csrf: state.csrf,
            body: { decision },
        });
    } catch (err) {
        ui.watchNotice.hidden = false;
        ui.watchNotice.textContent = (err && err.data && err.data.error) || "The answer did not reach the gateway.";
    }
}

function setupJoinLink() {
    ui.copyJoin.addEventListener("click", async () => {
        const link = `${location.origin}/join/${encodeURIComponent(state.consoleId)}`;
        try {
            await navigator.clipboard.writeText(link);
            ui.watchNotice.textContent = "Join link copied: who may join opens it to watch, view-only.";
        } catch {
            ui.watchNotice.textContent = `Join link: ${link}`;
        }
        ui.watchNotice.hidden = false;
    });
}

// ---------------------------------------------------------------------------- idle warning

/** @param {number} seconds seconds until the gateway closes an idle console */
function showIdleWarning(seconds) {
    state.idleDeadline = Date.now() + seconds * 1000;
    clearInterval(state.idleTimer);
    const tick = () => {
        const left = Math.max(0, Math.ceil((state.idleDeadline - Date.now()) / 1000));
        ui.idle.textContent = left > 0
            ? `No input for a while: this console closes in ${left} s without input.`
            : "No input for a while: this console is closing.";
        if (left <= 0) {
            clearInterval(state.idleTimer);
        }
    };
    tick();
    state.idleTimer = setInterval(tick, 1000);
    ui.idle.hidden = false;
}

function clearIdleWarning() {
    if (!ui.idle.hidden) {
        clearInterval(state.idleTimer);
        ui.idle.hidden = true;
        ui.idle.textContent = "";
    }
}

// ---------------------------------------------------------------------------- key menu

function buildKeysMenu() {
    for (const combo of COMBOS) {
        const item = el("button", {
            type: "button",
            role: "menuitem",
            class: "menu-item",
            tabindex: "-1",
            dataset: { testid: "key-combo", combo: combo.label },
            text: combo.label,
        });
        item.addEventListener("click", () => {
            closeKeysMenu(false);
            if (state.rfb && state.connected && !state.viewOnly) {
                sendCombo(state.rfb, combo.keys);
                clearIdleWarning();
                state.rfb.focus({ preventScroll: true });
            }
        });
        ui.keysMenu.append(item);
    }
    ui.keys.addEventListener("click", () => {
        if (ui.keysMenu.hidden) {
            openKeysMenu();
        } else {
            closeKeysMenu(true);
        }
    });
    ui.keys.addEventListener("keydown", (event) => {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
            event.preventDefault();
            openKeysMenu(event.key === "ArrowUp" ? -1 : 0);
        }
    });
    ui.keysMenu.addEventListener("keydown", (event) => {
        const items = [...ui.keysMenu.querySelectorAll("[role=menuitem]")];
        const at = items.indexOf(document.activeElement);
        const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 };
        if (event.key in moves) {
            event.preventDefault();
            items[(moves[event.key] + items.length) % items.length].focus();
        } else if (event.key === "Escape" || event.key === "Tab") {
            event.preventDefault();
            closeKeysMenu(true);
        }
    });
    document.addEventListener("pointerdown", (event) => {
        if (!ui.keysMenu.hidden && !ui.keysMenu.parentElement.contains(event.target)) {
            closeKeysMenu(false);
        }
    });
}

/** @param {number} [index] item to focus; negative counts from the end */
function openKeysMenu(index = 0) {
    ui.keysMenu.hidden = false;
    ui.keys.setAttribute("aria-expanded", "true");
    const items = ui.keysMenu.querySelectorAll("[role=menuitem]");
    items[(index + items.length) % items.length].focus();
}

/** @param {boolean} refocus return focus to the menu button */
function closeKeysMenu(refocus) {
    if (ui.keysMenu.hidden) {
        return;
    }
    ui.keysMenu.hidden = true;
    ui.keys.setAttribute("aria-expanded", "false");
    if (refocus) {
        ui.keys.focus();
    }
}

// ---------------------------------------------------------------------------- clipboard dialog

function setupClipboard() {
    ui.clipboard.addEventListener("click", () => {
        const { paste, max } = state.clipboard;
        byId("clipboard-send").disabled = !paste;
        byId("clipboard-type").disabled = !paste;
        ui.clipStatus.textContent = paste
            ? (max ? `At most ${max} bytes pass to the console.` : "")
            : "The policy for this server does not allow pasting into the console.";
        ui.clipDialog.showModal();
        ui.clipText.focus();
    });
    ui.clipDialog.addEventListener("close", () => {
        if (state.rfb && state.connected) {
            state.rfb.focus({ preventScroll: true });
        }
    });
    byId("clipboard-close").addEventListener("click", () => ui.clipDialog.close());
    byId("clipboard-send").addEventListener("click", () => {
        if (!state.rfb || !state.connected || state.viewOnly || !state.clipboard.paste) {
            return;
        }
        state.rfb.clipboardPasteFrom(ui.clipText.value);
        clearIdleWarning();
        ui.clipDialog.close();
    });
    byId("clipboard-type").addEventListener("click", async () => {
        const rfb = state.rfb;
        if (!rfb || !state.connected || state.viewOnly || !state.clipboard.paste) {
            return;
        }
        const text = ui.clipText.value;
        const limit = state.clipboard.max || MAX_TYPED;
        ui.clipDialog.close();
        ui.typing.hidden = false;
        ui.typing.textContent = "Typing…";
        // Stops when this console ends or turns view-only; the gateway drops keys from view-only anyway.
        const typed = await typeText(rfb, text, {
            limit,
            stillWanted: () => rfb === state.rfb && state.connected && !state.viewOnly,
        });
        clearIdleWarning();
        ui.typing.textContent = [...text].length > typed ? `Typed the first ${typed} characters only.` : "";
        ui.typing.hidden = !ui.typing.textContent;
    });
}

// ---------------------------------------------------------------------------- view toggles

function setupViewToggles() {
    const applyScale = () => {
        ui.scale.setAttribute("aria-pressed", String(state.scale));
        if (state.rfb) {
            state.rfb.scaleViewport = state.scale;
        }
    };
    applyScale();
    ui.scale.addEventListener("click", () => {
        state.scale = !state.scale;
        try {
            localStorage.setItem("novnc-gw.scale", state.scale ? "1" : "0");
        } catch {
            // Private mode: the choice lasts for this page only.
        }
        applyScale();
        if (state.rfb && state.connected) {
            state.rfb.focus({ preventScroll: true });
        }
    });

    if (!document.fullscreenEnabled) {
        ui.fullscreen.hidden = true;
        return;
    }
    ui.fullscreen.addEventListener("click", () => {
        if (document.fullscreenElement) {
            document.exitFullscreen();
        } else {
            byId("console-app").requestFullscreen().catch((err) => console.warn("full screen refused", err));
        }
    });
    document.addEventListener("fullscreenchange", () => {
        const on = Boolean(document.fullscreenElement);
        ui.fullscreen.setAttribute("aria-pressed", String(on));
        ui.fullscreen.textContent = on ? "Exit full screen" : "Full screen";
        if (state.rfb && state.connected) {
            state.rfb.focus({ preventScroll: true });
        }
    });
}

// ---------------------------------------------------------------------------- start

async function main() {
    for (const [key, id] of Object.entries({
        status: "status", viewOnlyBadge: "view-only-badge", name: "server-name", meta: "server-meta",
        cad: "btn-cad", keys: "btn-keys", keysMenu: "keys-menu", clipboard: "btn-clipboard", scale: "btn-scale",
        fullscreen: "btn-fullscreen", idle: "idle-warning", screen: "screen", connecting: "connecting",
        connectingText: "connecting-text", failure: "failure", failTitle: "failure-title",
        failReason: "failure-reason", failCode: "failure-code", failSignIn: "failure-signin",
        failReconnect: "failure-reconnect", clipDialog: "clipboard-dialog", clipText: "clipboard-text",
        clipStatus: "clipboard-status", clipRemote: "clipboard-remote", clipRemoteBox: "clipboard-remote-box",
        justify: "justify", justifyExpected: "justify-expected", justifyText: "justify-text",
        justification: "justification", typing: "typing-status", moderation: "moderation-banner",
        moderationEnd: "btn-moderation-end", observerBadge: "observer-badge", copyJoin: "btn-copy-join",
        watchers: "watchers", watcherList: "watcher-list", watchNotice: "watch-notice",
        recorded: "recorded-badge",
    })) {
        ui[key] = byId(id);
    }

    state.join = parseJoinPath();
    const parsed = state.join ? ["", ""] : parsePath();
    if (!parsed) {
        showFailure("No such server", "This console address is not valid.", null, "failed");
        ui.failReconnect.disabled = true;
        return;
    }
    [state.cloud, state.serverId] = parsed;
    setServerName(state.join ? "Live console" : state.serverId, state.join ? "watching, view only" : state.cloud);

    buildKeysMenu();
    setupClipboard();
    setupJustification();
    setupViewToggles();
    setupModeratorEnd();
    setupJoinLink();
    ui.cad.addEventListener("click", () => {
        if (state.rfb && state.connected && !state.viewOnly) {
            state.rfb.sendCtrlAltDel();
            clearIdleWarning();
            state.rfb.focus({ preventScroll: true });
        }
    });
    byId("btn-reconnect").addEventListener("click", connect);
    ui.failReconnect.addEventListener("click", connect);

    // Any input in the screen resets the gateway's idle clock, so it also clears the warning. Capture
    // phase: noVNC handles (and swallows) these events on its canvas inside this element.
    for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
        ui.screen.addEventListener(type, clearIdleWarning, { capture: true, passive: true });
    }
    window.addEventListener("pagehide", teardown);
    // Back/forward cache: the page comes back without a connection, so open a fresh one.
    window.addEventListener("pageshow", (event) => event.persisted && connect());

    // Signed out users go to the sign-in page now rather than after a failed socket.
    state.csrf = (await loadMe()).csrf;
    connect();
}

main().catch((err) => {
    console.error(err);
    if (ui.failure) {
        showFailure("The console page could not start", "Reload the page to try again.", null, "failed");
    }
});
