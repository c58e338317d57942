/**
 * Same-origin JSON API helpers shared by every page.
 *
 * The session is a cookie; state-changing requests carry the CSRF token from /api/me.
 */

/** An API answer that was not 2xx; `message` is the server's human text when it sent one. */
export class ApiError extends Error {
    /**
     * @param {number} status HTTP status
     * @param {object} data parsed JSON body ({} when none)
     */
    constructor(status, data) {
        super((data && typeof data.error === "string" && data.error) || `Request failed (HTTP ${status})`);
        this.status = status;
        this.data = data || {};
    }
}

/**
 * A path inside this site, or the fallback. Guards every redirect target we did not build ourselves.
 *
 * The same rule as the server's `safe_next`: a local absolute path with no backslash and no control
 * character. "//evil.example" is protocol-relative, browsers read "\" as "/", and they drop tab, CR and
 * LF anywhere in a URL, so "/<TAB>/evil.example" is navigated to as "//evil.example". As a last check,
 * the address the browser would actually go to must be on this origin.
 * @param {string|null|undefined} next
 * @param {string} [fallback]
 */
export function safeNext(next, fallback = "/servers") {
    if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//") || /[\\\x00-\x1f]/.test(next)) {
        return fallback;
    }
    try {
        if (new URL(next, location.origin).origin !== location.origin) {
            return fallback;
        }
    } catch {
        return fallback;
    }
    return next;
}

/** Send the browser to the sign-in page, coming back here afterwards. */
export function goToLogin(reason = "") {
    const here = location.pathname + location.search;
    const error = /^[a-z_]{1,32}$/.test(reason) ? "&error=" + reason : "";
    location.assign("/login?next=" + encodeURIComponent(here) + error);
}

/**
 * Fetch JSON. Rejects with ApiError for non-2xx answers; network failures reject with TypeError.
 * @param {string} path
 * @param {{method?: string, body?: object, csrf?: string}} [opts]
 */
export async function api(path, opts = {}) {
    const headers = { Accept: "application/json" };
    const init = { method: opts.method || "GET", headers, credentials: "same-origin", cache: "no-store" };
    if (opts.body !== undefined || init.method !== "GET") {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(opts.body === undefined ? {} : opts.body);
    }
    if (opts.csrf) {
        headers["X-CSRF-Token"] = opts.csrf;
    }
    const response = await fetch(path, init);
    let data = {};
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("application/json")) {
        try {
            data = await response.json();
        } catch {
            data = {};
        }
    }
    if (!response.ok) {
        throw new ApiError(response.status, data);
    }
    return data;
}

/**
 * The signed-in user, or a redirect to the sign-in page (the returned promise then never settles,
 * so callers need no special case).
 * @returns {Promise<{user: string, email: string|null, groups: string[], method: string, csrf: string,
 *                    admin: boolean, locked: boolean, expires: number}>}
 */
export async function loadMe() {
    try {
        return await api("/api/me");
    } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
            goToLogin(typeof err.data.reason === "string" ? err.data.reason : "");
            return new Promise(() => {});
        }
        throw err;
    }
}

/**
 * Sign out and follow the server's next address (the sign-in page, or the SSO provider's logout page).
 * @param {string} csrf
 */
export async function signOut(csrf) {
    let next = "/login?signed_out=1";
    try {
        const data = await api("/api/logout", { method: "POST", csrf });
        if (typeof data.next === "string") {
            const url = new URL(data.next, location.origin);
            if (url.protocol === "https:" || url.protocol === "http:") {
                next = url.href;
            }
        }
    } catch (err) {
        // A 401 means we were signed out already; anything else still ends on the sign-in page.
        console.warn("sign-out request failed", err);
    }
    location.assign(next);
}
