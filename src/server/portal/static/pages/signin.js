// Sign in with an API token (kept in session storage: closing the tab forgets it).

import { h } from "../dom.js";
import { takeFlash } from "../app.js";

export async function render(root, _params, ctx) {
  const flash = takeFlash();
  const error = h("p", { class: "notice error", id: "signin-error", role: "alert", hidden: true });
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "gpk_…",
    "aria-describedby": "token-help",
  });
  const submit = h("button", { type: "submit", id: "signin-submit" }, "Sign in");
  const form = h(
    "form",
    { id: "signin-form", "aria-labelledby": "signin-title" },
    h("div", { class: "field" }, h("label", { for: "token" }, "API token"), input),
    h(
      "p",
      { id: "token-help", class: "muted" },
      "A token with the scopes you need. `make serve` prints a demo token (also saved in var/demo-token).",
    ),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      await ctx.signIn(input.value);
      ctx.navigate("#/catalog");
    } catch (err) {
      error.textContent =
        err.status === 401
          ? "This token is not valid: it is unknown, expired or revoked."
          : `Signing in failed: ${err.message}`;
      error.hidden = false;
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(
    h(
      "div",
      { class: "signin" },
      h("h1", { id: "signin-title" }, "Sign in to Geopera"),
      flash ? h("p", { class: "notice", id: "signin-flash", role: "status" }, flash) : null,
      error,
      form,
    ),
  );
  input.focus();
}
