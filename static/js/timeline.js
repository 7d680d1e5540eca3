// An app's or an instance's timeline (<div class="timeline" data-url="/api/v1/.../events/">):
// fetched from the events API (session auth), newest first. New entries are added at the top as
// they happen (asked for every few seconds while the page is visible, overlapping the last ask
// so nothing recorded late is missed); "Older" fetches the next page. Every text goes in with
// textContent: a log line cannot inject markup.
(function () {
  "use strict";

  const EVERY = 5000;
  const OVERLAP = 60 * 1000;  // entries may be recorded a little after their time

  function stamp(iso, tz) {
    const parts = {};
    const format = new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    });
    for (const p of format.formatToParts(new Date(iso))) parts[p.type] = p.value;
    const zone = tz === "UTC" ? "UTC" : parts.timeZoneName;
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" + parts.second + " " + zone;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // Control characters and ANSI escapes out, as the logs panel shows lines.
  const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;
  const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;
  const clean = (text) => text.replace(ANSI, "").replace(CONTROL, "");

  function entry(e, tz) {
    const li = el("li", "timeline-entry category-" + e.category + " kind-" + e.kind + (e.failed ? " failed" : ""));
    li.dataset.id = e.id;
    li.dataset.time = e.time;
    li.dataset.kind = e.kind;
    const head = el("div", "timeline-head");
    head.appendChild(el("time", "muted small", stamp(e.time, tz)));
    head.appendChild(document.createTextNode(" "));
    head.appendChild(el("strong", null, e.title));
    if (e.instance && !e.title.includes(e.instance)) head.appendChild(el("span", "muted", " · " + e.instance));
    if (e.who) head.appendChild(el("span", "muted", " · by " + e.who));
    li.appendChild(head);
    if (e.detail) li.appendChild(el("div", "small", e.detail));
    if (e.lines.length) {
      const details = el("details");
      details.appendChild(el("summary", "small", "The last " + e.lines.length + " line" + (e.lines.length === 1 ? "" : "s") + " before it"));
      const pre = el("pre", "log-output");
      for (const line of e.lines) {
        const span = el("span", "log-line log-" + line.stream, (line.stream === "stderr" ? "err " : "") + clean(line.text));
        pre.appendChild(span);
        pre.appendChild(document.createTextNode("\n"));
      }
      details.appendChild(pre);
      li.appendChild(details);
    }
    return li;
  }

  function mount(root) {
    const tz = root.dataset.tz || "UTC";
    const list = root.querySelector("[data-timeline-entries]");
    const status = root.querySelector("[data-timeline-status]");
    const older = root.querySelector("[data-timeline-older]");
    const category = root.querySelector("[data-timeline-category]");
    const slot = root.querySelector("[data-timeline-slot]");
    let next = null;
    let generation = 0;

    function url(extra) {
      const params = new URLSearchParams(extra);
      if (category.value) params.set("category", category.value);
      if (slot && slot.value) params.set("slot", slot.value);
      return root.dataset.url + "?" + params.toString();
    }

    async function fetchPage(extra) {
      const response = await fetch(url(extra), { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) throw new Error(Object.values(body).flat().join(" ") || "HTTP " + response.status);
      return body;
    }

    // Each entry once, in time order (newest first), wherever it came from.
    function place(e) {
      if (list.querySelector('[data-id="' + e.id + '"]')) return false;
      const node = entry(e, tz);
      const at = new Date(e.time);
      const after = Array.from(list.children).find((li) => new Date(li.dataset.time) < at);
      list.insertBefore(node, after || null);
      return true;
    }

    function say(text) { if (status) status.textContent = text; }

    async function reload() {
      const mine = ++generation;
      list.innerHTML = "";
      say("Loading…");
      try {
        const body = await fetchPage({});
        if (mine !== generation) return;
        body.results.forEach(place);
        next = body.next_before;
        older.hidden = !next;
        root.dataset.loaded = "1";
        say(list.children.length ? "" : "Nothing happened here yet.");
      } catch (err) {
        say("Could not load the timeline: " + err.message);
      }
    }

    async function poll() {
      if (document.hidden || root.offsetParent === null || !root.dataset.loaded) return;
      const newest = list.firstElementChild ? new Date(list.firstElementChild.dataset.time) : new Date(Date.now() - OVERLAP);
      const mine = generation;
      try {
        const body = await fetchPage({ since: new Date(newest.getTime() - OVERLAP).toISOString(), limit: "200" });
        if (mine !== generation) return;
        if (body.results.some(place)) say("");
      } catch (err) {
        say("Could not refresh the timeline: " + err.message);
      }
    }

    older.addEventListener("click", async () => {
      if (!next) return;
      try {
        const body = await fetchPage({ before: next });
        body.results.forEach(place);
        next = body.next_before;
        older.hidden = !next;
      } catch (err) {
        say("Could not load older entries: " + err.message);
      }
    });
    category.addEventListener("change", reload);
    if (slot) slot.addEventListener("change", reload);
    reload();
    setInterval(poll, EVERY);
  }

  document.addEventListener("DOMContentLoaded", () => document.querySelectorAll(".timeline[data-url]").forEach(mount));
})();
