/**
 * The console WebSocket, wrapped so noVNC sees only the RFB stream.
 *
 * The gateway multiplexes two things on one socket: RFB as binary frames, and its own notices as
 * text frames carrying JSON ("hello" once before any RFB byte, "idle_warning" later). noVNC would
 * treat a text frame as RFB bytes, and its "disconnect" event only says clean or not, while the
 * gateway explains every close with a code and a reason. So we own the WebSocket and give noVNC a
 * stand-in channel: noVNC's Websock.attach() accepts any object with the properties listed in its
 * `rawChannelProps` (send, close, binaryType, onerror, onmessage, onopen, protocol, readyState) and
 * also assigns `onclose`.
 */

/**
 * @typedef {object} CloseInfo
 * @property {number} code the close code (1006 when the connection dropped without one)
 * @property {string} reason the gateway's human explanation ("" when none)
 * @property {boolean} wasClean
 * @property {boolean} byClient true when this page (or noVNC) closed the socket first
 */

/**
 * @typedef {object} ChannelHooks
 * @property {(hello: object|null) => void} hello the gateway's hello; null when RFB data arrived
 *   without one (the caller should start noVNC anyway)
 * @property {(secondsLeft: number) => void} [idleWarning]
 * @property {(notice: object) => void} [notice] any other JSON notice
 * @property {(info: CloseInfo) => void} close always called exactly once, after noVNC heard of it
 */

/**
 * Open the console WebSocket for one server and return the channel to hand to `new RFB(...)`.
 * @param {string} url ws(s) URL
 * @param {ChannelHooks} hooks
 */
export function openConsoleChannel(url, hooks) {
    return new ConsoleChannel(new WebSocket(url), hooks);
}

/** The ws(s) URL of the console socket for a server, on this page's origin. */
export function consoleSocketURL(cloud, serverId, justification = "") {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = justification ? `?justification=${encodeURIComponent(justification)}` : "";
    return `${scheme}//${location.host}/ws/console/${encodeURIComponent(cloud)}/${encodeURIComponent(serverId)}${query}`;
}

/** The ws(s) URL of the observer's socket for a live console (docs/shadowing.md). */
export function joinSocketURL(consoleId) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/join/${encodeURIComponent(consoleId)}`;
}

export class ConsoleChannel {
    /**
     * @param {WebSocket} ws a WebSocket that is connecting (or open)
     * @param {ChannelHooks} hooks
     */
    constructor(ws, hooks) {
        /** @type {WebSocket} */
        this._ws = ws;
        this._hooks = hooks;
        this._helloSeen = false;
        this._closedByClient = false;
        /** Binary frames that arrived before noVNC attached; see deliverQueued(). */
        this._queue = [];
        /** @type {CloseInfo|null} set once the socket has closed */
        this.closeInfo = null;

        // The slots noVNC fills in. They must be own, enumerable properties: attach() looks for them
        // with Object.keys() before it assigns them.
        this.onopen = null;
        this.onmessage = null;
        this.onerror = null;
        this.onclose = null;
        Object.defineProperties(this, {
            readyState: { enumerable: true, get: () => this._ws.readyState },
            protocol: { enumerable: true, get: () => this._ws.protocol },
            binaryType: {
                enumerable: true,
                get: () => this._ws.binaryType,
                // noVNC asks for "arraybuffer"; that is what we use anyway, so only accept that.
                set: (value) => {
                    if (value !== "arraybuffer") {
                        throw new Error(`unsupported binaryType ${value}`);
                    }
                },
            },
            send: { enumerable: true, value: (data) => this._ws.send(data) },
            close: { enumerable: true, value: (code, reason) => this._close(code, reason) },
        });

        ws.binaryType = "arraybuffer";
        ws.addEventListener("open", (event) => this.onopen && this.onopen(event));
        ws.addEventListener("error", (event) => this.onerror && this.onerror(event));
        ws.addEventListener("message", (event) => this._message(event));
        ws.addEventListener("close", (event) => this._closed(event));
    }

    /** The gateway's hello has arrived. */
    get helloSeen() {
        return this._helloSeen;
    }

    /**
     * Hand noVNC the RFB frames that arrived before it attached. Call right after `new RFB(...)`;
     * delivering them from inside attach() would reach noVNC before its handshake state exists.
     */
    deliverQueued() {
        const queued = this._queue;
        this._queue = [];
        for (const event of queued) {
            if (this.onmessage) {
                this.onmessage(event);
            }
        }
    }

    /** @param {MessageEvent} event */
    _message(event) {
        if (typeof event.data === "string") {
            this._notice(event.data);
            return;
        }
        if (!this._helloSeen) {
            // A gateway that sends no hello: start the viewer anyway rather than hang.
            this._helloSeen = true;
            this._queue.push(event);
            this._hooks.hello(null);
            return;
        }
        if (this.onmessage && this._queue.length === 0) {
            this.onmessage(event);
        } else {
            this._queue.push(event);
        }
    }

    /** @param {string} text */
    _notice(text) {
        let msg;
        try {
            msg = JSON.parse(text);
        } catch {
            console.warn("ignoring a text frame that is not JSON");
            return;
        }
        if (!msg || typeof msg !== "object") {
            return;
        }
        if (msg.type === "hello" && !this._helloSeen) {
            this._helloSeen = true;
            this._hooks.hello(msg);
        } else if (msg.type === "idle_warning") {
            const left = Number(msg.seconds_left);
            if (this._hooks.idleWarning && Number.isFinite(left)) {
                this._hooks.idleWarning(left);
            }
        } else if (this._hooks.notice) {
            this._hooks.notice(msg);
        }
    }

    _close(code, reason) {
        const state = this._ws.readyState;
        if (state === WebSocket.CONNECTING || state === WebSocket.OPEN) {
            this._closedByClient = true;
            if (code === undefined) {
                this._ws.close(1000);
            } else {
                this._ws.close(code, reason);
            }
        }
    }

    /** @param {CloseEvent} event */
    _closed(event) {
        this._queue = [];
        this.closeInfo = {
            code: event.code || 1005,
            reason: event.reason || "",
            wasClean: event.wasClean,
            byClient: this._closedByClient,
        };
        if (this.onclose) {
            this.onclose(event);
        }
        this._hooks.close(this.closeInfo);
    }
}
