/**
 * The recording player: a recorded console played through noVNC's own decoder.
 *
 * noVNC's RFB accepts any WebSocket-like object, so a RecordingSocket stands in for the console socket:
 * it answers noVNC's handshake with a synthetic one (RFB 3.8, security None, a ServerInit with the
 * framebuffer the segment starts with) and then hands over the recorded server messages, at their
 * recorded pace times the speed. What noVNC sends back goes nowhere.
 *
 * Seeking (docs/recording.md, "Player"): every segment starts at a keyframe and on a server-message
 * boundary, with only stateless encodings in the stream, so a seek starts a fresh noVNC at the segment
 * holding the target and feeds that segment at full speed up to it. Segments are decrypted and verified
 * by the gateway (keys never reach the browser) and cached here once fetched.
 *
 * Hooks for tests and benchmarks (documented in docs/recording.md): `window.recordingPlayer` has
 * `ready` (a promise, resolved once the first frame is shown), `seek(ms)` (resolves once the frame at
 * `ms` is on the canvas), `play()`, `pause()`, `position()`, `duration()`, `state()`, and `canvas()`.
 * The screen element's data-state is loading | paused | playing | ended | error, and data-position
 * the position in ms.
 */

import RFB from "/novnc/core/rfb.js";
import { ApiError, api, loadMe } from "./api.js";
import { byId, el, formatDuration, formatTime, setBanner, setupHeader } from "./ui.js";

const SPEEDS = [1, 2, 4, 8, 16];
/** With "skip idle", a quiet stretch longer than this is jumped over (leaving SKIP_LEAD_MS of it). */
const IDLE_GAP_MS = 2000;
const SKIP_LEAD_MS = 250;
const TICK_MS = 20;
/**
 * A segment's keyframe (the full update the gateway asked for when it cut) arrives a moment after the
 * segment starts; a seek closer than this to a segment's start begins at the segment before, so the
 * frame shown is never missing what the keyframe would have painted.
 */
const KEYFRAME_MS = 500;
const LIVE_POLL_MS = 2000;
/** noVNC's receive queue grows to at most 40 MiB; fast-forward hands it data in slices well below that. */
const FEED_SLICE = 1 << 20;
/** Record kinds of the gateway's segment feed (gateway/web/recordings.py, `feed`). */
const KIND_SCREEN = 0;
const KIND_SERVER = 1;
const KIND_MARKER = 3;

const MARKER_LABELS = {
    opened: "Console opened",
    resized: "Screen resized",
    notice: "Gateway notice",
    input_held: "Input held",
    input_released: "Input released",
    closed: "Console closed",
    failed: "Recording stopped",
};

// ---------------------------------------------------------------------------- the recording as noVNC sees it

/**
 * @typedef {object} Screen
 * @property {number} width
 * @property {number} height
 * @property {Uint8Array} pixelFormat the 16 bytes of a ServerInit's pixel format
 * @property {string} name the desktop name
 */

/**
 * @typedef {object} Feed one segment, decoded
 * @property {number} number
 * @property {Screen} screen the framebuffer at the segment's start
 * @property {number[]} times each server message's time (ms since the recording started)
 * @property {Uint8Array[]} messages the server messages
 * @property {{t: number, marker: object}[]} markers
 */

/**
 * Parse the gateway's segment feed: records of [kind u8][t u32][length u32][payload], big-endian, the
 * first one the screen (width u16, height u16, pixel format 16 bytes, name UTF-8).
 * @param {ArrayBuffer} buffer
 * @param {number} number
 * @returns {Feed}
 */
export function parseFeed(buffer, number) {
    const view = new DataView(buffer);
    const bytes = new Uint8Array(buffer);
    const feed = { number, screen: null, times: [], messages: [], markers: [] };
    let at = 0;
    while (at + 9 <= bytes.length) {
        const kind = view.getUint8(at);
        const t = view.getUint32(at + 1);
        const length = view.getUint32(at + 5);
        const payload = bytes.subarray(at + 9, at + 9 + length);
        if (payload.length !== length) {
            throw new Error(`segment ${number}: record cut short`);
        }
        at += 9 + length;
        if (kind === KIND_SCREEN) {
            const screen = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
            feed.screen = {
                width: screen.getUint16(0),
                height: screen.getUint16(2),
                pixelFormat: payload.slice(4, 20),
                name: new TextDecoder().decode(payload.subarray(20)),
            };
        } else if (kind === KIND_SERVER) {
            feed.times.push(t);
            feed.messages.push(payload);
        } else if (kind === KIND_MARKER) {
            feed.markers.push({ t, marker: JSON.parse(new TextDecoder().decode(payload)) });
        }
    }
    if (feed.screen === null) {
        throw new Error(`segment ${number}: no screen record`);
    }
    return feed;
}

/**
 * What a VNC server says before its first framebuffer update: version 3.8, one security type (None),
 * SecurityResult OK, then ServerInit for `screen`. noVNC's replies in between are not awaited: its
 * handshake reads whatever is queued, in order.
 * @param {Screen} screen
 * @returns {Uint8Array}
 */
export function syntheticHandshake(screen) {
    const name = new TextEncoder().encode(screen.name);
    const out = new Uint8Array(12 + 2 + 4 + 24 + name.length);
    const view = new DataView(out.buffer);
    out.set(new TextEncoder().encode("RFB 003.008\n"), 0);
    out.set([1, 1], 12); // one security type: None
    view.setUint32(14, 0); // SecurityResult: OK
    view.setUint16(18, screen.width);
    view.setUint16(20, screen.height);
    out.set(screen.pixelFormat, 22);
    view.setUint32(38, name.length);
    out.set(name, 42);
    return out;
}

/**
 * The WebSocket-like channel noVNC reads the recording from (its Websock.attach() wants these
 * properties as own or prototype names: send, close, binaryType, onerror, onmessage, onopen, protocol,
 * readyState). It is open from the start, so noVNC begins its handshake at once.
 */
export class RecordingSocket {
    constructor() {
        this.binaryType = "arraybuffer";
        this.protocol = "";
        this.readyState = "open";
        this.onopen = null;
        this.onmessage = null;
        this.onclose = null;
        this.onerror = null;
    }

    /** What noVNC sends (its pixel format, encodings, update requests): a recording does not listen. */
    send() {}

    close() {
        if (this.readyState === "closed") {
            return;
        }
        this.readyState = "closed";
        if (this.onclose) {
            this.onclose({ code: 1000, reason: "", wasClean: true });
        }
    }

    /** @param {Uint8Array} bytes what the server "sent" */
    push(bytes) {
        if (this.readyState === "open" && this.onmessage) {
            this.onmessage({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
        }
    }
}

/** Concatenate messages into slices of at most FEED_SLICE bytes (one message may exceed it alone). */
function* slices(messages) {
    let batch = [];
    let size = 0;
    for (const message of messages) {
        if (size + message.length > FEED_SLICE && batch.length) {
            yield concat(batch, size);
            batch = [];
            size = 0;
        }
        batch.push(message);
        size += message.length;
    }
    if (batch.length) {
        yield concat(batch, size);
    }
}

function concat(parts, size) {
    if (parts.length === 1) {
        return parts[0];
    }
    const out = new Uint8Array(size);
    let at = 0;
    for (const part of parts) {
        out.set(part, at);
        at += part.length;
    }
    return out;
}

/** The gateway refused a segment because it does not verify (edited, out of chain, unknown key). */
class SegmentProblem extends Error {
    constructor(number, data) {
        super((data && data.error) || `Segment ${number} could not be read`);
        this.segment = number;
        this.code = (data && data.code) || "error";
    }
}

// ---------------------------------------------------------------------------- playback

class Player {
    /**
     * @param {string} id the recording's id
     * @param {object} meta the gateway's description (GET /api/recordings/{id})
     * @param {HTMLElement} screen where noVNC draws
     * @param {(player: Player) => void} onChange called whenever position or state changes
     */
    constructor(id, meta, screen, onChange) {
        this.id = id;
        this.meta = meta;
        this.screenEl = screen;
        this.onChange = onChange;
        /** @type {Map<number, Promise<Feed>>} */
        this.cache = new Map();
        /** @type {RFB|null} */
        this.rfb = null;
        /** @type {RecordingSocket|null} */
        this.socket = null;
        /** @type {Feed|null} the segment being fed */
        this.feed = null;
        this.next = 0; // index in feed.messages of the next message to feed
        this.pos = 0; // ms: what the canvas shows
        this.playing = false;
        this.speed = 1;
        this.skipIdle = true;
        this.status = "loading";
        this.problem = null; // a SegmentProblem that stopped playback
        this.clock = { wall: 0, pos: 0 };
        this.timer = 0;
        this.seekToken = 0;
        this.advancing = false;
    }

    get segments() {
        return this.meta.segments;
    }

    duration() {
        return this.meta.recording.duration;
    }

    setState(status) {
        this.status = status;
        this.onChange(this);
    }

    /** @param {number} number */
    load(number) {
        let pending = this.cache.get(number);
        if (!pending) {
            pending = (async () => {
                const path = `/api/recordings/${encodeURIComponent(this.id)}/segments/${number}`;
                const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
                if (!response.ok) {
                    let data = {};
                    try {
                        data = await response.json();
                    } catch {
                        data = {};
                    }
                    throw new SegmentProblem(number, data);
                }
                return parseFeed(await response.arrayBuffer(), number);
            })();
            pending.catch(() => this.cache.delete(number)); // a failure may be retried by a later seek
            this.cache.set(number, pending);
        }
        return pending;
    }

    /** Index (in `segments`) of the segment holding `ms`. */
    segmentAt(ms) {
        let found = 0;
        for (let i = 0; i < this.segments.length; i += 1) {
            if (this.segments[i].start > ms) {
                break;
            }
            found = i;
        }
        return found;
    }

    /** A fresh noVNC, shaken hands with, showing `screen`'s size. */
    restart(screen) {
        if (this.rfb) {
            this.rfb.disconnect();
        }
        this.screenEl.replaceChildren();
        const socket = new RecordingSocket();
        const rfb = new RFB(this.screenEl, socket, { shared: true });
        rfb.viewOnly = true;
        rfb.scaleViewport = true;
        rfb.focusOnClick = false;
        rfb.background = "#0b0f14";
        // noVNC closes the socket itself when the stream makes no sense to it (an unclean disconnect).
        rfb.addEventListener("disconnect", (event) => {
            if (this.rfb === rfb && !event.detail.clean) {
                this.fail(new Error(`The recording cannot be decoded at ${formatDuration(this.pos / 1000)}`));
            }
        });
        socket.push(syntheticHandshake(screen));
        this.rfb = rfb;
        this.socket = socket;
    }

    /** Feed the current segment's messages up to time `ms` (inclusive), in as few slices as it takes. */
    feedTo(ms) {
        const feed = this.feed;
        if (!feed) {
            return;
        }
        const start = this.next;
        let end = start;
        while (end < feed.times.length && feed.times[end] <= ms) {
            end += 1;
        }
        if (end === start) {
            return;
        }
        for (const slice of slices(feed.messages.slice(start, end))) {
            this.socket.push(slice);
        }
        this.next = end;
    }

    /**
     * Show the frame at `ms`: a fresh noVNC at the segment holding it, fed at full speed up to it (or,
     * forward within the segment being played, just the rest). Resolves once it is on the canvas.
     * @param {number} ms
     */
    async seek(ms) {
        const target = Math.max(0, Math.min(ms, this.duration()));
        const token = ++this.seekToken;
        const index = this.segmentAt(target);
        const number = this.segments[index].number;
        const forward = this.feed && this.feed.number === number && target >= this.pos;
        const early = !forward && index > 0 && target - this.segments[index].start < KEYFRAME_MS;
        let feed;
        let before = null;
        try {
            [feed, before] = await Promise.all([
                this.load(number),
                early ? this.load(this.segments[index - 1].number) : null,
            ]);
        } catch (err) {
            this.fail(err);
            return;
        }
        if (token !== this.seekToken) {
            return; // a later seek won
        }
        this.problem = null;
        if (!forward) {
            this.restart((before || feed).screen);
            if (before) {
                this.feed = before;
                this.next = 0;
                this.feedTo(Infinity);
            }
            this.feed = feed;
            this.next = 0;
        }
        this.feedTo(target);
        this.pos = target;
        this.clock = { wall: performance.now(), pos: target };
        this.prefetch(index + 1);
        this.status = this.playing ? "playing" : "paused";
        this.onChange(this);
        if (this.playing) {
            this.schedule();
        }
    }

    prefetch(index) {
        if (index < this.segments.length) {
            this.load(this.segments[index].number).catch(() => {});
        }
    }

    fail(err) {
        this.playing = false;
        clearTimeout(this.timer);
        this.problem = err;
        this.status = "error";
        this.onChange(this);
    }

    play() {
        if (this.status === "error") {
            return;
        }
        if (this.status === "ended" || this.pos >= this.duration()) {
            if (!this.meta.recording.live) {
                this.playing = true;
                this.seek(0);
                return;
            }
        }
        this.playing = true;
        this.clock = { wall: performance.now(), pos: this.pos };
        this.status = "playing";
        this.onChange(this);
        this.schedule();
    }

    pause() {
        this.playing = false;
        clearTimeout(this.timer);
        if (this.status === "playing") {
            this.status = "paused";
        }
        this.onChange(this);
    }

    setSpeed(speed) {
        this.clock = { wall: performance.now(), pos: this.pos };
        this.speed = speed;
        this.onChange(this);
    }

    schedule() {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.tick(), TICK_MS);
    }

    /** The time of the next message to show, or null at the end of what is stored. */
    upcoming() {
        const feed = this.feed;
        if (feed && this.next < feed.times.length) {
            return feed.times[this.next];
        }
        const index = feed ? this.segments.findIndex((s) => s.number === feed.number) + 1 : 0;
        return index > 0 && index < this.segments.length ? this.segments[index].start : null;
    }

    async tick() {
        if (!this.playing || this.advancing) {
            return;
        }
        let now = this.clock.pos + (performance.now() - this.clock.wall) * this.speed;
        const upcoming = this.upcoming();
        if (this.skipIdle && upcoming !== null && upcoming - now > IDLE_GAP_MS) {
            now = upcoming - SKIP_LEAD_MS;
            this.clock = { wall: performance.now(), pos: now };
        }
        const end = this.duration();
        now = Math.min(now, end);
        this.feedTo(now);
        const feed = this.feed;
        if (feed && this.next >= feed.times.length) {
            const index = this.segments.findIndex((s) => s.number === feed.number) + 1;
            if (index > 0 && index < this.segments.length && this.segments[index].start <= now) {
                // The next segment continues the same stream: same noVNC, no new handshake.
                this.advancing = true;
                const token = this.seekToken;
                let next;
                try {
                    next = await this.load(this.segments[index].number);
                } catch (err) {
                    this.fail(err);
                    return;
                } finally {
                    this.advancing = false;
                }
                if (token !== this.seekToken) {
                    // A seek happened meanwhile and owns the stream now; its tick was dropped while
                    // this one waited, so carry on from where it left things.
                    if (this.playing) {
                        this.schedule();
                    }
                    return;
                }
                this.feed = next;
                this.next = 0;
                this.prefetch(index + 1);
                this.feedTo(now);
            }
        }
        this.pos = now;
        if (now >= end && this.meta.recording.live) {
            this.clock = { wall: performance.now(), pos: end }; // wait at the edge for what comes next
        } else if (now >= end) {
            this.playing = false;
            this.status = "ended";
            this.onChange(this);
            return;
        }
        this.onChange(this);
        this.schedule();
    }

    /** A live recording grew: new segments, a longer duration (and the end, once the console closed). */
    update(meta) {
        this.meta = meta;
        if (!this.feed && meta.segments.length) {
            this.seek(0).then(() => readyResolve());
        }
        this.onChange(this);
    }
}

// ---------------------------------------------------------------------------- the page

const ui = {};
/** @type {Player|null} */
let player = null;
let readyResolve;
const ready = new Promise((resolve) => {
    readyResolve = resolve;
});

/** The recording id from /recordings/{id}. */
function recordingId() {
    const parts = location.pathname.split("/");
    if (parts.length !== 3 || parts[1] !== "recordings" || !parts[2]) {
        return null;
    }
    try {
        return decodeURIComponent(parts[2]);
    } catch {
        return null;
    }
}

async function fetchMeta(id) {
    return api(`/api/recordings/${encodeURIComponent(id)}`);
}

function showIntegrity(meta, problem) {
    const integrity = meta.integrity || {};
    let status = integrity.status || "unknown";
    let text = integrity.message || "";
    if (problem instanceof SegmentProblem) {
        status = problem.code === "tampered" ? "tampered" : "error";
        text = problem.message;
    }
    ui.integrity.dataset.status = status;
    if (problem instanceof SegmentProblem && integrity.segment === undefined) {
        ui.integrity.dataset.segment = String(problem.segment);
    } else if (integrity.segment !== null && integrity.segment !== undefined) {
        ui.integrity.dataset.segment = String(integrity.segment);
    }
    const classes = {
        verified: "banner banner-ok",
        live: "banner banner-info",
        truncated: "banner banner-warn",
        tampered: "banner banner-error",
        error: "banner banner-error",
    };
    ui.integrity.className = classes[status] || "banner banner-warn";
    setBanner(ui.integrity, text || null);
}

function render(p) {
    const duration = p.duration();
    ui.screen.dataset.state = p.status;
    ui.screen.dataset.position = String(Math.round(p.pos));
    ui.play.textContent = p.playing ? "Pause" : "Play";
    ui.play.setAttribute("aria-pressed", String(p.playing));
    ui.play.disabled = p.status === "loading" || p.status === "error";
    ui.time.textContent = `${formatDuration(p.pos / 1000)} / ${formatDuration(duration / 1000)}`;
    ui.timeline.setAttribute("aria-valuemax", String(Math.round(duration)));
    ui.timeline.setAttribute("aria-valuenow", String(Math.round(p.pos)));
    ui.timeline.setAttribute("aria-valuetext", formatDuration(p.pos / 1000));
    for (const button of ui.speeds) {
        button.setAttribute("aria-pressed", String(Number(button.dataset.speed) === p.speed));
    }
    if (p.problem instanceof SegmentProblem) {
        showIntegrity(p.meta, p.problem);
    } else if (p.problem) {
        setBanner(byId("load-error"), p.problem.message);
    }
    drawTimeline(p);
}

let histogramCache = { key: "", buckets: new Float64Array(1), peak: 1 };

/** The per-second activity summed into one bucket per pixel column (recomputed only when it changes). */
function histogram(activity, duration, columns) {
    const key = `${activity.length}:${duration}:${columns}`;
    if (histogramCache.key !== key) {
        const buckets = new Float64Array(columns);
        for (let second = 0; second < activity.length; second += 1) {
            const x = Math.min(columns - 1, Math.floor(((second * 1000) / duration) * columns));
            buckets[x] += activity[second];
        }
        histogramCache = { key, buckets, peak: Math.max(1, ...buckets) };
    }
    return histogramCache;
}

/** Activity per second as bars, markers and typed text as ticks, the playhead as a line. */
function drawTimeline(p) {
    const canvas = ui.timeline;
    const width = canvas.clientWidth || 600;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(56 * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const height = 56;
    const style = getComputedStyle(canvas);
    ctx.clearRect(0, 0, width, height);
    const duration = Math.max(1, p.duration());
    const { buckets, peak } = histogram(p.meta.activity || [], duration, Math.max(1, Math.floor(width)));
    ctx.fillStyle = style.getPropertyValue("--timeline-bar").trim() || "#5b8fe6";
    for (let x = 0; x < buckets.length; x += 1) {
        if (buckets[x] > 0) {
            const h = Math.max(2, (Math.log1p(buckets[x]) / Math.log1p(peak)) * (height - 14));
            ctx.fillRect(x, height - h, 1, h);
        }
    }
    ctx.fillStyle = style.getPropertyValue("--timeline-marker").trim() || "#f2c14e";
    for (const marker of p.meta.markers || []) {
        ctx.fillRect(Math.floor((marker.t / duration) * width), 0, 2, 8);
    }
    ctx.fillStyle = style.getPropertyValue("--timeline-typed").trim() || "#6fcf97";
    for (const run of p.meta.typed || []) {
        ctx.fillRect(Math.floor((run.t / duration) * width), 9, 2, 5);
    }
    ctx.fillStyle = style.getPropertyValue("--timeline-head").trim() || "#ff8a80";
    ctx.fillRect(Math.floor((p.pos / duration) * width) - 1, 0, 2, height);
}

function markerText(marker) {
    const label = MARKER_LABELS[marker.kind] || marker.kind;
    if (marker.kind === "resized" && marker.width) {
        return `${label}: ${marker.width}×${marker.height}`;
    }
    if (marker.kind === "closed" && marker.code !== undefined) {
        return `${label} (${marker.code}${marker.reason ? `: ${marker.reason}` : ""})`;
    }
    if (marker.kind === "failed" && marker.reason) {
        return `${label}: ${marker.reason}`;
    }
    const detail = marker.text || marker.message || marker.type;
    return typeof detail === "string" && detail ? `${label}: ${detail}` : label;
}

function fillMarkers(meta) {
    ui.markers.replaceChildren(
        ...(meta.markers || []).map((marker) => {
            const button = el("button", {
                type: "button",
                class: "link-button",
                dataset: { testid: "marker", t: String(marker.t), kind: marker.kind },
                text: `${formatDuration(marker.t / 1000)} ${markerText(marker)}`,
            });
            button.addEventListener("click", () => player && player.seek(marker.t));
            return el("li", {}, button);
        }),
    );
}

function fillTyped(meta) {
    const filter = ui.typedFilter.value.trim().toLowerCase();
    const runs = meta.typed || [];
    ui.typedFilter.disabled = meta.typed_text !== "shown";
    ui.typedNote.textContent = {
        shown: runs.length ? "" : "Nothing was typed.",
        hidden: "You may play this recording but not read what was typed (policy: typed_text).",
        none: "Input was not recorded for this console.",
    }[meta.typed_text] || "";
    const items = [];
    for (const run of runs) {
        const at = filter ? run.text.toLowerCase().indexOf(filter) : 0;
        if (at < 0) {
            continue;
        }
        const t = run.t + (filter && run.times ? run.times[at] : 0);
        const button = el(
            "button",
            { type: "button", class: "typed-entry", dataset: { testid: "typed-entry", t: String(t) } },
            el("span", { class: "typed-time", text: formatDuration(t / 1000) }),
            el("span", { class: "typed-text", text: run.text }),
        );
        button.addEventListener("click", () => player && player.seek(t));
        items.push(el("li", {}, button));
    }
    ui.typed.replaceChildren(...items);
}

function describe(meta) {
    const r = meta.recording;
    document.title = `${r.server_name || r.server_id} · Recording`;
    ui.title.textContent = r.server_name || r.server_id;
    const ended = r.ended ? `, until ${formatTime(r.ended)}` : "";
    ui.subtitle.textContent = `${r.user} · ${r.cloud} · ${r.permission} · ${formatTime(r.started)}${ended}`;
    ui.liveBadge.hidden = !r.live;
    if (meta.download) {
        ui.download.href = meta.download;
        ui.download.setAttribute("download", `${r.id}.nvgr`);
        ui.download.hidden = false;
    }
    showIntegrity(meta, null);
    fillMarkers(meta);
    fillTyped(meta);
}

async function follow(id) {
    while (player && player.meta.recording.live) {
        await new Promise((resolve) => setTimeout(resolve, LIVE_POLL_MS));
        try {
            const meta = await fetchMeta(id);
            player.update(meta);
            describe(meta);
        } catch (err) {
            console.warn("live recording refresh failed", err);
        }
    }
}

async function main() {
    Object.assign(ui, {
        screen: byId("screen"),
        play: byId("play"),
        time: byId("time"),
        timeline: byId("timeline"),
        integrity: byId("integrity"),
        title: byId("title"),
        subtitle: byId("subtitle"),
        liveBadge: byId("live-badge"),
        download: byId("download"),
        markers: byId("markers"),
        typed: byId("typed"),
        typedFilter: byId("typed-filter"),
        typedNote: byId("typed-note"),
        speeds: [],
    });
    const me = await loadMe();
    setupHeader(me);
    const id = recordingId();
    if (id === null) {
        setBanner(byId("load-error"), "This address names no recording.");
        ui.screen.dataset.state = "error";
        return;
    }
    let meta;
    try {
        meta = await fetchMeta(id);
    } catch (err) {
        ui.screen.dataset.state = "error";
        const missing = err instanceof ApiError && err.status === 404;
        setBanner(byId("load-error"), missing ? "No such recording, or you may not watch it." : err.message);
        return;
    }
    describe(meta);
    for (const speed of SPEEDS) {
        const button = el("button", {
            type: "button",
            class: "btn btn-small",
            dataset: { testid: `speed-${speed}`, speed: String(speed) },
            "aria-pressed": String(speed === 1),
            text: `${speed}×`,
        });
        button.addEventListener("click", () => player && player.setSpeed(speed));
        ui.speeds.push(button);
    }
    byId("speeds").replaceChildren(...ui.speeds);
    player = new Player(id, meta, ui.screen, render);
    window.recordingPlayer.player = player;
    ui.play.addEventListener("click", () => (player.playing ? player.pause() : player.play()));
    byId("skip-idle").addEventListener("change", (event) => {
        player.skipIdle = event.target.checked;
    });
    ui.typedFilter.addEventListener("input", () => fillTyped(player.meta));
    const seekAtPointer = (event) => {
        const box = ui.timeline.getBoundingClientRect();
        player.seek(((event.clientX - box.left) / box.width) * player.duration());
    };
    ui.timeline.addEventListener("click", seekAtPointer);
    ui.timeline.addEventListener("keydown", (event) => {
        const step = { ArrowLeft: -5000, ArrowRight: 5000 }[event.key];
        if (step) {
            event.preventDefault();
            player.seek(player.pos + step);
        }
    });
    // Space plays and pauses, unless the keyboard is busy elsewhere (a field, a button of its own).
    document.addEventListener("keydown", (event) => {
        const busy = event.target instanceof HTMLElement && event.target.closest("input, textarea, button, a, select");
        if (event.key === " " && !busy && !ui.play.disabled) {
            event.preventDefault();
            ui.play.click();
        }
    });
    window.addEventListener("resize", () => drawTimeline(player));
    if (!meta.segments.length) {
        ui.screen.dataset.state = meta.recording.live ? "loading" : "ended";
        setBanner(byId("load-error"), "This recording holds no screen data yet.");
    } else {
        // A link may name a moment (#t=<ms>): the recordings page links typed-text hits that way.
        const start = Number(new URLSearchParams(location.hash.slice(1)).get("t"));
        await player.seek(Number.isFinite(start) ? start : 0);
        readyResolve();
    }
    if (meta.recording.live) {
        follow(id);
    }
}

window.recordingPlayer = {
    ready,
    player: null,
    seek: (ms) => player.seek(ms),
    play: () => player.play(),
    pause: () => player.pause(),
    position: () => player.pos,
    duration: () => player.duration(),
    state: () => player.status,
    canvas: () => ui.screen.querySelector("canvas"),
};

main().catch((err) => {
    console.error(err);
    setBanner(byId("load-error"), "The player could not start. Reload the page to try again.");
});
