// Credits: the project's balance (credits.balance.get) and its ledger
// (credits.ledger.list, newest first), each entry linked to its job.

import { h, formatDate } from "../dom.js";

const PAGE_SIZE = 50;
const KIND_WORDS = {
  LEDGER_ENTRY_KIND_GRANT: "grant",
  LEDGER_ENTRY_KIND_RESERVE: "reserve",
  LEDGER_ENTRY_KIND_CAPTURE: "capture",
  LEDGER_ENTRY_KIND_RELEASE: "release",
  LEDGER_ENTRY_KIND_WAIVE: "waive",
};

// int64 fields come as strings in proto3 JSON, and zeros not at all.
const int = (value) => Number(value ?? 0);
const credits = (value) => int(value).toLocaleString("en");

export async function render(root, _params, ctx) {
  const { api, projectId, signal } = ctx;
  const [{ balance }, firstPage] = await Promise.all([
    api.call("credits.balance.get", { project_id: projectId }, { signal }),
    api.call("credits.ledger.list", { project_id: projectId, page_size: PAGE_SIZE }, { signal }),
  ]);

  const figures = [
    ["available", "Available", "Credits new jobs can reserve"],
    ["held", "Held", "Reserved by jobs that have not finished"],
    ["captured_total", "Spent", "Captured by successful jobs, all time"],
    ["granted_total", "Granted", "Granted to the project, all time"],
  ];
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "secondary", id: "ledger-more" }, "Load older entries");
  let pageToken = firstPage.next_page_token || "";

  root.append(
    h("h1", {}, "Credits ", h("span", { class: "muted" }, `· project ${projectId}`)),
    h(
      "dl",
      { class: "balance", id: "balance", "aria-label": "Balance" },
      figures.map(([key, label, help]) =>
        h("div", { title: help }, h("dt", {}, label), h("dd", { id: `balance-${key}`, dataset: { value: String(int(balance[key])) } }, credits(balance[key]))),
      ),
    ),
    h("h2", { id: "ledger-title" }, "Ledger"),
    h("p", { class: "muted" }, "Newest first. Reserve, capture, release and waive entries open the job they belong to."),
    h(
      "div",
      { class: "table-wrap", role: "region", "aria-labelledby": "ledger-title", tabindex: "0" },
      h(
        "table",
        { id: "ledger", class: "stack" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "When"),
            h("th", { scope: "col" }, "Kind"),
            h("th", { scope: "col", class: "num" }, "Amount"),
            h("th", { scope: "col", class: "num" }, "Available after"),
            h("th", { scope: "col", class: "num" }, "Held after"),
            h("th", { scope: "col" }, "Job"),
            h("th", { scope: "col" }, "Note"),
          ),
        ),
        body,
      ),
    ),
    more,
  );

  const addEntries = (entries) => body.append(...entries.map(entryRow));
  addEntries(firstPage.entries || []);
  more.hidden = !pageToken;
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await api.call("credits.ledger.list", { project_id: projectId, page_size: PAGE_SIZE, page_token: pageToken }, { signal });
      addEntries(page.entries || []);
      pageToken = page.next_page_token || "";
      more.hidden = !pageToken;
    } catch (err) {
      ctx.handleError(err);
    } finally {
      more.disabled = false;
    }
  });
}

function entryRow(entry) {
  const kind = KIND_WORDS[entry.kind] || String(entry.kind || "").toLowerCase();
  return h(
    "tr",
    { dataset: { entryId: entry.id, kind } },
    // data-label: a phone shows each row as a card of labelled values (portal.css .stack).
    h("td", { "data-label": "When" }, formatDate(entry.create_time)),
    h("td", { "data-label": "Kind" }, kind),
    h("td", { class: "num", "data-label": "Amount" }, credits(entry.amount)),
    h("td", { class: "num", "data-label": "Available after" }, credits(entry.available_after)),
    h("td", { class: "num", "data-label": "Held after" }, credits(entry.held_after)),
    h("td", { "data-label": "Job" }, entry.job_id ? h("a", { href: `#/jobs/${entry.job_id}`, class: "mono" }, entry.job_id) : "–"),
    h("td", { "data-label": "Note" }, entry.note || ""),
  );
}
