/**
 * The sign-in page: the methods the gateway offers (local form, SSO button, proxy note).
 *
 * Query parameters are never shown as text: `error` and `signed_out` are codes mapped to fixed
 * sentences, and `next` only travels on to the server (which checks it again) and our own redirects.
 */

import { ApiError, api, safeNext } from "./api.js";
import { byId, setBanner } from "./ui.js";

const NOTICES = {
    sso_failed: "Single sign-on did not complete. Try again, or contact your administrator if it keeps failing.",
    sso_unavailable: "Single sign-on is not available right now. Try again in a few minutes.",
    session_ended: "Your sign-in has ended (it expired or is no longer valid). Please sign in again.",
    proxy_refused: "Your company sign-in could not be verified by the gateway. Contact your administrator.",
};

const params = new URLSearchParams(location.search);
const next = safeNext(params.get("next"));
const signedOut = params.get("signed_out") === "1";

/** @type {number} timer of the "try again in N s" countdown */
let throttleTimer = 0;

function showPageMessages() {
    const code = params.get("error");
    if (code && Object.hasOwn(NOTICES, code)) {
        setBanner(byId("page-error"), NOTICES[code]);
    }
    if (signedOut) {
        setBanner(byId("notice"), "You have signed out.");
    }
}

/** Already signed in (a live cookie, or a trusted proxy that signs us in): go on, or offer to. */
async function checkSession() {
    try {
        const me = await api("/api/me");
        if (!signedOut) {
            location.replace(next);
            return true;
        }
        byId("signed-in-user").textContent = me.user;
        byId("signed-in-continue").href = next;
        byId("signed-in").hidden = false;
    } catch {
        // Not signed in: the normal case here.
    }
    return false;
}

/** @param {{type: string, label?: string, start?: string}[]} methods */
function showMethods(methods) {
    const types = new Set(methods.map((m) => m.type));
    const oidc = methods.find((m) => m.type === "oidc");
    if (oidc) {
        const button = byId("sso-button");
        const start = safeNext(oidc.start, "/auth/oidc/start");
        button.href = `${start}${start.includes("?") ? "&" : "?"}next=${encodeURIComponent(next)}`;
        if (typeof oidc.label === "string" && oidc.label.trim()) {
            button.textContent = `Sign in with ${oidc.label.trim()}`;
        }
        byId("sso").hidden = false;
    }
    if (types.has("local")) {
        byId("local-form").hidden = false;
        byId("divider").hidden = !oidc;
        byId("user").focus();
    }
    byId("proxy-note").hidden = !(types.has("proxy") && !types.has("local") && !oidc);
    byId("no-method").hidden = types.size > 0;
}

function setError(message) {
    const node = byId("login-error");
    node.textContent = message || "";
    node.hidden = !message;
}

/** Keep the submit button off until the server's retry_after has passed. */
function throttle(seconds) {
    const submit = byId("submit");
    const until = Date.now() + seconds * 1000;
    clearInterval(throttleTimer);
    const tick = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        if (left <= 0) {
            clearInterval(throttleTimer);
            submit.disabled = false;
            submit.textContent = "Sign in";
            return;
        }
        submit.disabled = true;
        submit.textContent = `Try again in ${left} s`;
    };
    tick();
    throttleTimer = setInterval(tick, 1000);
}

/** @param {SubmitEvent} event */
async function submit(event) {
    event.preventDefault();
    const userInput = byId("user");
    const passwordInput = byId("password");
    const button = byId("submit");
    const user = userInput.value.trim();
    const password = passwordInput.value;
    if (!user || !password) {
        setError(!user ? "Enter your user name." : "Enter your password.");
        (!user ? userInput : passwordInput).focus();
        return;
    }
    setError(null);
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
        const data = await api("/api/login", { method: "POST", body: { user, password, next } });
        location.assign(safeNext(data.next, next));
        return;
    } catch (err) {
        button.disabled = false;
        button.textContent = "Sign in";
        if (err instanceof ApiError) {
            if (err.status === 429) {
                const wait = Number(err.data.retry_after) || 30;
                setError(err.data.error || `Too many failed attempts. Try again in ${wait} s.`);
                throttle(wait);
            } else if (err.status === 401) {
                setError(err.message);
                passwordInput.value = "";
                passwordInput.focus();
            } else {
                setError(err.message);
            }
        } else {
            setError("The gateway cannot be reached. Check your connection and try again.");
        }
    }
}

async function main() {
    showPageMessages();
    byId("local-form").addEventListener("submit", submit);
    if (await checkSession()) {
        return;
    }
    try {
        const data = await api("/api/auth/methods");
        showMethods(Array.isArray(data.methods) ? data.methods : []);
    } catch {
        setBanner(byId("page-error"), "The gateway cannot be reached. Reload the page to try again.");
    } finally {
        byId("loading").hidden = true;
    }
}

main();
