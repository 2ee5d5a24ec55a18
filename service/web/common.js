// Helpers shared by the two pages: DOM building, API calls, formatting.
// Every piece of data reaches the DOM through textContent or attributes, never innerHTML.
"use strict";

const SEGNAS = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

  /** An HTML element: el("td", {class: "num", title: "x"}, "text", childNode, ...). */
  function el(tag, attrs = {}, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  /** An SVG element, same signature as el(). */
  function svg(tag, attrs = {}, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(key, String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** An error carrying the API's error body ({"detail": ..., "errors": [...]}). */
  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describeError(status, body) {
    const detail = body && typeof body.detail === "string" ? body.detail : null;
    return detail || `the server answered ${status}`;
  }

  // --- signing in ---------------------------------------------------------------------------
  // A server with accounts answers 401 without a token: the page then asks for one, keeps it
  // in sessionStorage (this tab only, gone when it closes) and sends it as a bearer token,
  // which a cross-site page cannot make the browser send (unlike a cookie).

  const TOKEN_KEY = "segnas-token";

  function storedToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function storeToken(token) {
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
  }

  /** fetch() with the JSON Accept header, the token, and X-Requested-With (what a cross-site
   * form cannot send: service/guards.py). A 401 shows the sign-in form. */
  async function api(url, init = {}) {
    const headers = { Accept: "application/json", "X-Requested-With": "segnas-page" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { ...init, headers: { ...headers, ...(init.headers || {}) } });
    if (response.status === 401) showSignIn(token ? "That token is unknown or revoked." : null);
    return response;
  }

  let signInShown = false;

  function showSignIn(problem) {
    if (signInShown) return;
    signInShown = true;
    storeToken(null);
    const input = el("input", {
      id: "token-input", type: "password", autocomplete: "current-password", required: true,
      placeholder: "segnas_…", "aria-label": "API token", spellcheck: "false",
    });
    const error = el("p", { id: "signin-error", class: "error-box", role: "alert" }, problem || "");
    error.hidden = !problem;
    const form = el(
      "form", { id: "signin", class: "card signin" },
      el("h2", {}, "Sign in"),
      el("p", { class: "muted" },
        "This server has accounts. Paste your API token (an admin makes one with ",
        el("code", {}, "segnas token create --user NAME"), ")."),
      el("div", { class: "signin-row" }, input,
        el("button", { id: "signin-submit", type: "submit" }, "Sign in")),
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      const answer = await fetch("/me", {
        headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
      });
      if (!answer.ok) {
        error.textContent = answer.status === 401
          ? "That token is unknown or revoked." : `The server answered ${answer.status}.`;
        error.hidden = false;
        return;
      }
      storeToken(token);
      window.location.reload();
    });
    const main = document.querySelector("main");
    main.prepend(form);
    input.focus();
  }

  /** Who is signed in, in the top bar (and a way out). */
  async function showUser() {
    const bar = document.querySelector(".topbar");
    if (!bar) return;
    const response = await api("/me", { cache: "no-store" });
    if (!response.ok) return;
    const me = await response.json();
    const who = el("span", { id: "whoami", class: "whoami" });
    if (me.auth === "off") {
      who.append("no accounts (local server)");
    } else {
      const out = el("button", { id: "signout", type: "button", class: "linkish" }, "sign out");
      out.addEventListener("click", () => {
        storeToken(null);
        window.location.reload();
      });
      who.append(`signed in as ${me.name}${me.admin ? " (admin)" : ""} · `, out);
    }
    bar.append(who);
  }

  /** GET a JSON document; throws ApiError on a non-2xx answer. ``init`` adds fetch options
   * (``{cache: "no-store"}`` where the page's own URL also answers JSON). */
  async function getJSON(url, init = {}) {
    return readJSON(await api(url, init));
  }

  /** The JSON body of a response; throws ApiError unless it is 2xx. */
  async function readJSON(response) {
    let body = null;
    const text = await response.text();
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = { detail: text.slice(0, 300) };
      }
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  /** A random UUID. crypto.randomUUID exists only in secure contexts (https, localhost); a
   * service reached over plain http on another host still needs idempotency keys. */
  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const part = (from, to) => hex.slice(from, to);
    return `${part(0, 8)}-${part(8, 12)}-${part(12, 16)}-${part(16, 20)}-${part(20, 32)}`;
  }

  function isTerminal(status) {
    return TERMINAL.has(status);
  }

  function statusBadge(status, attrs = {}) {
    return el("span", { ...attrs, class: `badge badge-${status}` }, status);
  }

  /** A progress bar; fraction in [0, 1] or null (an empty bar). */
  function progressBar(fraction, attrs = {}) {
    const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
    const pct = Math.round(f * 100);
    return el(
      "div",
      { ...attrs, class: "progress", role: "progressbar", "aria-valuemin": 0,
        "aria-valuemax": 100, "aria-valuenow": pct, title: `${pct}%` },
      el("div", { class: "progress-fill", style: `width: ${pct}%` }),
    );
  }

  /** The paper's notation for an architecture: one cell index per encoder layer, "2 2 0 1". */
  function archString(arch) {
    return Array.isArray(arch) ? arch.join(" ") : "";
  }

  function formatNumber(value, digits = 3) {
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
  }

  function formatTime(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  /** A time element: the local time, with the server's ISO string as its tooltip. */
  function timeElement(iso) {
    return el("time", { datetime: iso || null, title: iso || null }, formatTime(iso));
  }

  /** "45 s", "3 min 12 s", "2 h 05 min". */
  function formatDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "–";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  /** How long a search has run (from its start to its end, or to now) and, while it runs,
   * how long it has left at its pace so far (none before 2 % of it is done). In seconds;
   * null where there is nothing to say. The page's clock stands in for the server's. */
  function searchTimes(search, now = Date.now()) {
    const start = Date.parse(search.started_at || "");
    if (Number.isNaN(start)) return { elapsed: null, remaining: null };
    const end = search.finished_at ? Date.parse(search.finished_at) : now;
    const elapsed = Math.max(0, (end - start) / 1000);
    const fraction = search.progress ? search.progress.fraction : 0;
    const pacing = search.status === "running" && fraction >= 0.02 && fraction < 1;
    return { elapsed, remaining: pacing ? (elapsed * (1 - fraction)) / fraction : null };
  }

  // A spec handed from a search's page to the start form ("New search from it"), through the
  // tab's sessionStorage: taken once.
  const CLONE_KEY = "segnas.clone";

  function stashClone(value) {
    sessionStorage.setItem(CLONE_KEY, JSON.stringify(value));
  }

  function takeClone() {
    const text = sessionStorage.getItem(CLONE_KEY);
    sessionStorage.removeItem(CLONE_KEY);
    try {
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  }

  function shortId(id) {
    return typeof id === "string" ? id.slice(0, 8) : "";
  }

  document.addEventListener("DOMContentLoaded", showUser);

  return {
    ApiError, api, archString, el, formatDuration, formatNumber, formatTime, getJSON, isTerminal,
    progressBar, readJSON, searchTimes, shortId, stashClone, statusBadge, svg, takeClone,
    timeElement, uuid,
  };
})();
