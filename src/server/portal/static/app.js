// The portal's shell: hash router, navigation, sign-in state, the project picker and
// the error banner. Each page is a module exporting `render(root, params, ctx)`; it may
// return a cleanup function, called when the user leaves the page.

import * as api from "./api.js";
import * as mapHelpers from "./map.js";
import { h } from "./dom.js";

const PROJECT_KEY = "geopera.project";
const FLASH_KEY = "geopera.flash";

// Hash routes -> page modules (loaded on first use).
const ROUTES = [
  { pattern: /^\/signin$/, page: "signin", public: true },
  { pattern: /^\/catalog$/, page: "catalog", nav: "#/catalog" },
  { pattern: /^\/items\/(?<id>[^/]+)$/, page: "item", nav: "#/catalog" },
  { pattern: /^\/process$/, page: "process", nav: "#/process" },
  { pattern: /^\/jobs$/, page: "jobs", nav: "#/jobs" },
  { pattern: /^\/jobs\/(?<id>[^/]+)$/, page: "job", nav: "#/jobs" },
  { pattern: /^\/analytics$/, page: "analytics", nav: "#/analytics" },
  { pattern: /^\/credits$/, page: "credits", nav: "#/credits" },
];

const state = {
  principal: null, // auth.whoami's answer for the signed-in token
  projects: [], // [{id, display_name}]
  projectId: "",
  page: null, // {controller, cleanup}
};

const $ = (id) => document.getElementById(id);

// ---- messages -------------------------------------------------------------------

export function showBanner(text, kind = "error") {
  $("banner-text").textContent = text;
  $("banner").dataset.kind = kind;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
  $("banner-text").textContent = "";
}

// Words for an error a page did not handle itself.
export function describeError(err) {
  if (err instanceof api.ApiError) {
    if (err.missingScope) {
      const scope = err.metadata.required_scope || "a scope this page needs";
      const what = err.operation ? ` (${err.operation})` : "";
      return `Missing scope: your token does not hold "${scope}", which this needs${what}. Ask for a token with the "${scope}" scope.`;
    }
    const id = err.requestId ? ` (request ${err.requestId})` : "";
    return `${err.message}${err.reason ? ` [${err.reason}]` : ""}${id}`;
  }
  return err && err.message ? err.message : String(err);
}

// The one place errors end: an invalid token goes back to sign-in with a message;
// anything else is shown in the banner (and in the page, when it failed to render).
export function handleError(err, root) {
  if (err && err.name === "AbortError") return;
  if (err instanceof api.ApiError && err.unauthenticated) {
    signOut(
      "Your token has expired, was revoked or is not valid. Sign in again with a current token.",
    );
    return;
  }
  const text = describeError(err);
  showBanner(text);
  if (root && root.isConnected) {
    // Also in the page, where the missing part would be: one message at a time.
    for (const old of root.querySelectorAll(":scope > .page-error")) old.remove();
    const reason = err instanceof api.ApiError ? err.reason : "";
    const note = h("p", { class: "notice error page-error", dataset: { reason } }, text);
    const heading = root.querySelector(":scope > h1");
    if (heading) heading.after(note);
    else root.prepend(note);
  }
}

// ---- session --------------------------------------------------------------------

export async function signIn(token) {
  api.setToken(token.trim());
  try {
    await loadSession();
  } catch (err) {
    api.clearToken();
    throw err;
  }
}

async function loadSession() {
  state.principal = await api.call("auth.whoami");
  state.projects = state.principal.project_ids.map((id) => ({ id, display_name: id }));
  try {
    const { projects } = await api.call("projects.list", { page_size: 100 });
    if (projects && projects.length) state.projects = projects;
  } catch (err) {
    // Without catalog:read the token's own project ids name the projects.
    if (!(err instanceof api.ApiError && err.missingScope)) throw err;
  }
  const saved = sessionStorage.getItem(PROJECT_KEY);
  const ids = state.projects.map((p) => p.id);
  state.projectId = ids.includes(saved) ? saved : ids[0] || "";
  sessionStorage.setItem(PROJECT_KEY, state.projectId);
  renderSession();
}

export function signOut(message = "") {
  api.clearToken();
  sessionStorage.removeItem(PROJECT_KEY);
  state.principal = null;
  state.projects = [];
  state.projectId = "";
  if (message) sessionStorage.setItem(FLASH_KEY, message);
  renderSession();
  hideBanner();
  if (location.hash === "#/signin") route();
  else navigate("#/signin");
}

// A message left for the sign-in page (why the user was sent there), read once.
export function takeFlash() {
  const message = sessionStorage.getItem(FLASH_KEY) || "";
  sessionStorage.removeItem(FLASH_KEY);
  return message;
}

function renderSession() {
  const signedIn = Boolean(state.principal);
  $("nav").hidden = !signedIn;
  $("session").hidden = !signedIn;
  const picker = $("project-picker");
  picker.replaceChildren(
    ...state.projects.map((p) =>
      h("option", { value: p.id }, p.display_name && p.display_name !== p.id ? `${p.display_name} (${p.id})` : p.id),
    ),
  );
  picker.value = state.projectId;
  const who = state.principal;
  $("whoami").textContent = who ? `${who.name || who.principal_id} (${who.kind})` : "";
  $("whoami").title = who ? `Token ${who.principal_id}; scopes: ${who.scopes.join(", ")}` : "";
}

// ---- router ---------------------------------------------------------------------

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function match(path) {
  for (const entry of ROUTES) {
    const found = entry.pattern.exec(path);
    if (found) return { entry, params: { ...(found.groups || {}) } };
  }
  return null;
}

async function route() {
  const path = location.hash.replace(/^#/, "") || "/";
  const found = match(path);
  if (!found) {
    navigate(api.getToken() ? "#/catalog" : "#/signin");
    return;
  }
  if (!found.entry.public && !api.getToken()) {
    navigate("#/signin");
    return;
  }
  if (!found.entry.public && !state.principal) {
    try {
      await loadSession();
    } catch (err) {
      handleError(err);
      return;
    }
  }
  leavePage();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === found.entry.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = $("main");
  const root = h("section", { class: `page page-${found.entry.page}`, dataset: { page: found.entry.page } });
  main.replaceChildren(root);
  const controller = new AbortController();
  state.page = { controller, cleanup: null };
  const ctx = {
    api,
    map: mapHelpers,
    projectId: state.projectId,
    principal: state.principal,
    navigate,
    signal: controller.signal,
    handleError: (err) => handleError(err, root),
    showMessage: showBanner,
    signIn,
  };
  document.body.dataset.page = found.entry.page;
  document.body.removeAttribute("data-ready");
  try {
    const module = await import(`./pages/${found.entry.page}.js`);
    const cleanup = await module.render(root, found.params, ctx);
    if (state.page && state.page.controller === controller) state.page.cleanup = cleanup || null;
  } catch (err) {
    if (!controller.signal.aborted) handleError(err, root);
  }
  if (controller.signal.aborted) return;
  const heading = root.querySelector("h1");
  document.title = heading ? `${heading.textContent} · Geopera` : "Geopera portal";
  // A keyboard user's focus was on the link that led here, now gone: start at the page.
  if (!document.activeElement || document.activeElement === document.body) $("main").focus({ preventScroll: true });
  // Tests and screen readers: the page has drawn (or said why it could not).
  document.body.dataset.ready = found.entry.page;
}

function leavePage() {
  if (!state.page) return;
  state.page.controller.abort();
  if (typeof state.page.cleanup === "function") state.page.cleanup();
  state.page = null;
}

// ---- start ----------------------------------------------------------------------

function start() {
  $("sign-out").addEventListener("click", () => signOut("You are signed out."));
  $("banner-close").addEventListener("click", hideBanner);
  $("project-picker").addEventListener("change", (event) => {
    state.projectId = event.target.value;
    sessionStorage.setItem(PROJECT_KEY, state.projectId);
    hideBanner();
    route();
  });
  $("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });
  window.addEventListener("hashchange", () => {
    hideBanner();
    route();
  });
  window.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    handleError(event.reason);
  });
  route();
}

start();
