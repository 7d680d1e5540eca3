// The logs panel of an instance's page (or of an app's, its instances merged): it opens at its newest line after every refresh, and
// "Follow" keeps it open on the instance's log over a websocket (new lines appended as the app
// writes them; the server sends them in batches and says how many it had to skip when this
// page fell behind). "Pause" holds new lines back (up to HELD_MAX) until "Resume".
(() => {
  const KEEP = 10000; // lines the page keeps while following; older ones scroll away
  const HELD_MAX = 5000;
  const form = document.getElementById("logs-form");
  const followButton = document.getElementById("logs-follow");
  const pauseButton = document.getElementById("logs-pause");
  const status = document.getElementById("logs-follow-status");
  if (!form || !followButton) return;
  let socket = null;
  let paused = false;
  let held = [];
  let heldSkipped = 0;

  const output = () => document.querySelector("#logs-lines .log-output");
  const atBottom = (el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
  const toBottom = () => { const el = output(); if (el) el.scrollTop = el.scrollHeight; };

  document.body.addEventListener("htmx:afterSettle", (event) => {
    const panel = document.getElementById("logs-lines");
    if (panel && (panel === event.target || panel.contains(event.target))) toBottom();
  });
  // A refresh replaces the lines: a follow would write into the old ones, so it stops.
  form.addEventListener("htmx:beforeRequest", () => { if (socket) stop("Stopped following: the lines were read again."); });

  function lineElement([stream, time, text, instance]) {
    const span = document.createElement("span");
    span.className = `log-line log-${stream}`;
    if (instance) { // an app's merged log: which instance wrote it
      const name = document.createElement("span");
      name.className = "log-instance";
      name.textContent = instance;
      span.append(name, " ");
    }
    if (form.elements.timestamps.checked && time) {
      const stamp = document.createElement("time");
      stamp.textContent = time;
      span.append(stamp, " ");
    }
    if (stream === "stderr") {
      const mark = document.createElement("abbr");
      mark.title = "standard error";
      mark.textContent = "err";
      span.append(mark, " ");
    }
    span.append(text, "\n"); // text nodes: whatever the app printed stays text
    return span;
  }

  function notice(text) {
    const span = document.createElement("span");
    span.className = "log-line log-notice";
    span.textContent = `… ${text}\n`;
    return span;
  }

  function append(nodes) {
    const el = output();
    if (!el || !nodes.length) return;
    const follow = atBottom(el);
    el.append(...nodes);
    while (el.childElementCount > KEEP) el.firstElementChild.remove();
    if (follow) el.scrollTop = el.scrollHeight;
  }

  function take(frame) {
    const needle = form.elements.q.value.trim().toLowerCase();
    const nodes = [];
    if (frame.dropped) nodes.push(notice(`${frame.dropped} line(s) skipped: they came faster than this page read them`));
    for (const line of frame.lines) {
      if (!needle || line[2].toLowerCase().includes(needle)) nodes.push(lineElement(line));
    }
    if (!paused) return append(nodes);
    held.push(...nodes);
    if (held.length > HELD_MAX) { heldSkipped += held.length - HELD_MAX; held = held.slice(-HELD_MAX); }
    status.textContent = `Paused: ${held.length + heldSkipped} new line(s) held.`;
  }

  function start() {
    const params = new URLSearchParams();
    for (const name of ["tail", "stream"]) params.set(name, form.elements[name].value);
    if (form.elements.timestamps.checked) params.set("timestamps", "1");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${followButton.dataset.url}?${params}`);
    const el = output();
    if (el) el.replaceChildren();
    followButton.textContent = "Stop following";
    followButton.setAttribute("aria-pressed", "true");
    pauseButton.hidden = false;
    status.textContent = "Following: new lines appear as the app writes them.";
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      if (frame.end !== undefined) return stop(`Stopped following: ${frame.end}`);
      take(frame);
    });
    socket.addEventListener("close", () => { if (socket) stop("Stopped following: the connection closed."); });
  }

  function stop(why) {
    const closing = socket;
    socket = null;
    if (closing) closing.close();
    if (paused) resume();
    followButton.textContent = "Follow";
    followButton.setAttribute("aria-pressed", "false");
    pauseButton.hidden = true;
    status.textContent = why;
  }

  function resume() {
    paused = false;
    const nodes = heldSkipped ? [notice(`${heldSkipped} line(s) skipped while paused`), ...held] : held;
    held = [];
    heldSkipped = 0;
    append(nodes);
    pauseButton.textContent = "Pause";
    pauseButton.setAttribute("aria-pressed", "false");
    if (socket) status.textContent = "Following: new lines appear as the app writes them.";
  }

  followButton.addEventListener("click", () => (socket ? stop("Stopped following.") : start()));
  pauseButton.addEventListener("click", () => {
    if (paused) return resume();
    paused = true;
    pauseButton.textContent = "Resume";
    pauseButton.setAttribute("aria-pressed", "true");
    status.textContent = "Paused: 0 new line(s) held.";
  });
})();
