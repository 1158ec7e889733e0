// Placeholder until the page lands (portal-core).
import { h } from "../dom.js";

export async function render(root) {
  root.append(h("h1", {}, "credits"), h("p", { class: "muted" }, "This page is being built."));
}
