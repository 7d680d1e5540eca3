// Metrics charts (uPlot). A container <div class="metrics" data-url="..." data-kind="app|host">
// holds range buttons and empty chart slots; this fetches the JSON of the metrics API
// (session auth) and draws it, refreshing while the page is open.
(function () {
  "use strict";

  const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4d7c0f", "#be185d"];
  const MiB = 1024 * 1024;

  function bytes(v) {
    if (v == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(v < 10 && i ? 1 : 0) + " " + units[i];
  }

  // Axis ticks step in numbers people read: 1-2-2.5-5 steps of ten, shown with as many decimals
  // as the step needs (never "2%, 1%, 1%, 0%"); sizes step in powers of two of one unit (never
  // "19/38/57 MiB").
  const DECIMAL_INCRS = [];
  for (let e = -3; e <= 12; e++) for (const m of [1, 2, 2.5, 5]) DECIMAL_INCRS.push(Number((m * Math.pow(10, e)).toPrecision(3)));
  const BYTE_INCRS = [];
  for (const unit of [1, 1024, MiB, 1024 * MiB, 1024 * 1024 * MiB]) for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]) BYTE_INCRS.push(unit * m);

  function decimals(incr) {
    let d = 0;
    while (d < 6 && Math.abs(Math.round(incr * Math.pow(10, d)) - incr * Math.pow(10, d)) > 1e-9) d++;
    return d;
  }

  function byteTick(v, incr) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    for (let step = incr; step >= 1024 && i < units.length - 1; step /= 1024) i++;
    const scaled = v / Math.pow(1024, i);
    return (Number.isInteger(scaled) ? String(scaled) : scaled.toFixed(1)) + " " + units[i];
  }

  const AXES = {
    pct: { incrs: DECIMAL_INCRS, tick: (v, incr) => v.toFixed(decimals(incr)) + "%" },
    cores: { incrs: DECIMAL_INCRS, tick: (v, incr) => v.toFixed(decimals(incr)) },
    bytes: { incrs: BYTE_INCRS, tick: byteTick },
    rate: { incrs: BYTE_INCRS, tick: (v, incr) => byteTick(v, incr) + "/s" },
  };

  // Moments as every page writes them: 2026-12-04 11:23 UTC, in the portal's time zone.
  function stamp(date, tz, seconds) {
    const parts = {};
    const format = new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    });
    for (const p of format.formatToParts(date)) parts[p.type] = p.value;
    const zone = tz === "UTC" ? "UTC" : parts.timeZoneName;
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + (seconds ? ":" + parts.second : "") + " " + zone;
  }

  // Time ticks in the same words: 24 h clock, the date (MM-DD) under the first tick of each day.
  function timeTicks(splits, incr, tz) {
    let lastDay = null;
    return splits.map((ts) => {
      const text = stamp(new Date(ts * 1000), tz, false);  // "YYYY-MM-DD HH:MM ZONE"
      const day = text.slice(5, 10);
      const clock = text.slice(11, 16);
      if (incr >= 86400) return day;
      const label = day !== lastDay ? clock + "\n" + day : clock;
      lastDay = day;
      return label;
    });
  }

  // Vertical lines for deploys, restarts, OOM kills...: "why did my app die". Deaths are red
  // (an OOM kill solid and thicker), Docker's restarts orange, the portal's changes grey.
  const MARKER_STYLES = {
    oom: { color: "#dc2626", width: 2, dash: [] },
    died: { color: "#dc2626", width: 1.5, dash: [4, 3] },
    crash_loop: { color: "#991b1b", width: 2, dash: [2, 2] },
    restarted: { color: "#d97706", width: 1, dash: [4, 3] },
    other: { color: "#6b7280", width: 1, dash: [4, 3] },
  };
  function markersPlugin(markers) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          for (const m of markers) {
            if (m.t < u.scales.x.min || m.t > u.scales.x.max) continue;
            const x = Math.round(u.valToPos(m.t, "x", true));
            const style = MARKER_STYLES[m.kind] || MARKER_STYLES.other;
            ctx.strokeStyle = style.color;
            ctx.lineWidth = style.width;
            ctx.setLineDash(style.dash);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
  }

  function chart(slot, title, data, series, markers, yFormat, axis, tz) {
    slot.innerHTML = "";
    const width = Math.max(300, slot.clientWidth || 600);
    const opts = {
      title: title,
      width: width,
      height: 200,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
      series: [{ value: (u, ts) => (ts == null ? "–" : stamp(new Date(ts * 1000), tz, true)) }].concat(series.map((s, i) => ({
        label: s.label,
        stroke: s.color || COLORS[i % COLORS.length],
        width: s.width || 1.5,
        dash: s.dash,
        spanGaps: false,
        value: (u, v) => (v == null ? "–" : yFormat(v)),
      }))),
      axes: [{ values: (u, splits, axisIdx, space, incr) => timeTicks(splits, incr, tz) }, {
        size: 80,
        incrs: axis.incrs,
        values: (u, vals, axisIdx, space, incr) => {
          const labels = vals.map((v) => (v == null ? "" : axis.tick(v, incr)));
          slot.dataset.yticks = labels.join("|");  // what the canvas shows, for tests to read
          return labels;
        },
      }],
      plugins: [markersPlugin(markers)],
    };
    const plot = new uPlot(opts, [data.t].concat(series.map((s) => s.values)), slot);
    slot.dataset.points = String(data.t.length);
    slot.dataset.drawn = String(series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0));
    return plot;
  }

  function appCharts(root, data, tz) {
    const slots = root.querySelectorAll("[data-chart]");
    const bySlot = (field, scale) => data.series.map((s) => ({
      label: data.app + "/" + s.slot,
      values: s[field].map((v) => (v == null ? null : v * (scale || 1))),
    }));
    const total = (field, label, color, dash) => ({ label: label, values: data.total[field], color: color, width: 2, dash: dash });
    const pct = (v) => v.toFixed(0) + "%";
    for (const slot of slots) {
      const kind = slot.dataset.chart;
      if (kind === "cpu") {
        chart(slot, "CPU, % of limit", data, bySlot("cpu_pct").concat(data.series.length > 1 ? [total("cpu_pct", "whole app", "#111827")] : []), data.markers, pct, AXES.pct, tz);
      } else if (kind === "throttle") {
        chart(slot, "CPU throttled, % of the time", data, bySlot("throttled_pct").concat(data.series.length > 1 ? [total("throttled_pct", "whole app", "#111827")] : []), data.markers, pct, AXES.pct, tz);
      } else if (kind === "memory") {
        const limit = data.series.length ? [{ label: "limit", values: data.series[0].memory_limit, color: "#dc2626", dash: [6, 4] }] : [];
        chart(slot, "Memory working set vs limit", data, bySlot("working_set").concat(limit), data.markers, bytes, AXES.bytes, tz);
      } else if (kind === "network") {
        chart(slot, "Network (whole app)", data, [total("net_rx_bps", "received/s", COLORS[0]), total("net_tx_bps", "sent/s", COLORS[1])], data.markers, (v) => bytes(v) + "/s", AXES.rate, tz);
      } else if (kind === "blkio") {
        chart(slot, "Block I/O (whole app)", data, [total("blk_read_bps", "read/s", COLORS[2]), total("blk_write_bps", "written/s", COLORS[3])], data.markers, (v) => bytes(v) + "/s", AXES.rate, tz);
      }
    }
  }

  function hostCharts(root, data, tz) {
    const flat = (value, n) => Array(n).fill(value);
    const n = data.t.length;
    for (const slot of root.querySelectorAll("[data-chart]")) {
      if (slot.dataset.chart === "cpu") {
        chart(slot, "CPU cores: used, reserved, capacity", data, [
          { label: "used", values: data.used.cpu_cores, color: COLORS[0], width: 2 },
          { label: "reserved", values: data.reserved.cpu_cores, color: COLORS[2] },
          { label: "capacity", values: flat(data.capacity.cpus, n), color: "#111827", dash: [6, 4] },
        ], [], (v) => v.toFixed(2), AXES.cores, tz);
      } else if (slot.dataset.chart === "memory") {
        chart(slot, "Memory: used (working set), reserved, capacity", data, [
          { label: "used", values: data.used.working_set, color: COLORS[0], width: 2 },
          { label: "reserved", values: data.reserved.memory, color: COLORS[2] },
          { label: "capacity", values: flat(data.capacity.memory, n), color: "#111827", dash: [6, 4] },
        ], [], bytes, AXES.bytes, tz);
      }
    }
  }

  function listMarkers(root, markers, tz) {
    const list = root.querySelector("[data-markers]");
    if (!list) return;
    list.innerHTML = "";
    for (const m of markers.slice(-20).reverse()) {
      const li = document.createElement("li");
      li.className = "marker-" + m.kind;
      li.textContent = stamp(new Date(m.t * 1000), tz, true) + " — " + m.text;
      list.appendChild(li);
    }
    if (!markers.length) list.innerHTML = "<li>No deploys, restarts, deaths or OOM kills in this range.</li>";
  }

  function mount(root) {
    let range = root.dataset.range || "1h";
    const tz = root.dataset.tz || "UTC";
    let timer = null;
    const status = root.querySelector("[data-status]");
    async function load() {
      try {
        const response = await fetch(root.dataset.url + "?range=" + encodeURIComponent(range), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) throw new Error("HTTP " + response.status);
        const data = await response.json();
        (root.dataset.kind === "host" ? hostCharts : appCharts)(root, data, tz);
        if (data.markers) listMarkers(root, data.markers, tz);
        root.dataset.loaded = range;
        if (status) status.textContent = "Updated " + stamp(new Date(), tz, true) + " · step " + data.step + " s (" + data.source + ")";
      } catch (err) {
        if (status) status.textContent = "Could not load metrics: " + err.message;
      }
    }
    // In a hidden tab a chart has no width to draw in: it loads when its tab is shown.
    const visible = () => root.offsetParent !== null;
    function schedule() {
      clearInterval(timer);
      // Live while open: every sweep for the last hour, every minute for longer ranges.
      timer = setInterval(() => { if (!document.hidden && visible()) load(); }, range === "1h" ? 10000 : 60000);
    }
    document.addEventListener("slipway:tab-shown", () => { if (visible()) load(); });
    for (const button of root.querySelectorAll("[data-range-button]")) {
      button.addEventListener("click", () => {
        range = button.dataset.rangeButton;
        for (const b of root.querySelectorAll("[data-range-button]")) b.setAttribute("aria-pressed", String(b === button));
        load();
        schedule();
      });
    }
    if (visible()) load();
    schedule();
  }

  document.addEventListener("DOMContentLoaded", () => document.querySelectorAll(".metrics[data-url]").forEach(mount));
})();
