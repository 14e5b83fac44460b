/* bq2pg dashboard: live progress over Server-Sent Events.
 *
 * Each element with data-run="ID" and data-live is a run still queued or running: its
 * progress bar, percentage, rows, phase and status (children with data-field) follow
 * GET /api/v1/runs/ID/events, which the session cookie authenticates. A browser opens at
 * most six connections to one server over HTTP/1.1, so at most MAX_STREAMS streams are open
 * at once (the page's htmx polling needs the others). When a run ends, "run-ended" is sent
 * on <body> (the run page refreshes its live part on it).
 */
(function () {
  "use strict";

  var MAX_STREAMS = 3;
  var open = {};   // run id -> EventSource
  var ended = {};  // run ids whose stream said "end": never opened again
  var last = {};   // run id -> {percent, status}: what the stream said last

  function fields(id, name, fn) {
    document.querySelectorAll('[data-run="' + id + '"]').forEach(function (run) {
      run.querySelectorAll('[data-field="' + name + '"]').forEach(fn);
    });
  }

  function showPercent(id, percent) {
    var whole = Math.floor(Math.min(100, Math.max(0, percent)));
    fields(id, "progress", function (el) { el.value = whole; el.textContent = whole + " %"; });
    fields(id, "percent", function (el) { el.textContent = whole + " %"; });
  }

  function showStatus(id, status) {
    fields(id, "status", function (el) {
      el.textContent = status;
      el.className = "status " + status;
    });
  }

  function remember(id, key, value) {
    last[id] = last[id] || {};
    last[id][key] = value;
  }

  function watch(id) {
    var source = new EventSource("/api/v1/runs/" + encodeURIComponent(id) + "/events");
    open[id] = source;
    source.addEventListener("progress", function (e) {
      var d = JSON.parse(e.data);
      if (d.total_rows) {
        var percent = 100 * d.rows / d.total_rows;
        remember(id, "percent", percent);
        showPercent(id, percent);
      }
      fields(id, "rows", function (el) { el.textContent = Number(d.rows).toLocaleString("en-US"); });
      if (d.phase) fields(id, "phase", function (el) { el.textContent = d.phase; });
    });
    source.addEventListener("phase", function (e) {
      var phase = JSON.parse(e.data).phase;
      fields(id, "phase", function (el) { el.textContent = phase; });
    });
    source.addEventListener("status", function (e) {
      var status = JSON.parse(e.data).status;
      remember(id, "status", status);
      showStatus(id, status);
    });
    source.addEventListener("end", function (e) {
      var status = JSON.parse(e.data).status;
      source.close();
      delete open[id];
      ended[id] = true;
      remember(id, "status", status);
      showStatus(id, status);
      if (status === "succeeded") showPercent(id, 100);
      document.body.dispatchEvent(new CustomEvent("run-ended", { detail: { run: id, status: status } }));
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) delete open[id];  // 401, 404: given up
    };
  }

  function scan() {
    var live = {};
    document.querySelectorAll("[data-run][data-live]").forEach(function (el) {
      live[el.getAttribute("data-run")] = true;
    });
    Object.keys(open).forEach(function (id) {
      if (!live[id]) { open[id].close(); delete open[id]; }
    });
    Object.keys(live).forEach(function (id) {
      if (!open[id] && !ended[id] && Object.keys(open).length < MAX_STREAMS) watch(id);
      // a refreshed part may be a heartbeat behind the stream: keep the newer value
      var seen = last[id];
      if (seen && seen.percent !== undefined) {
        fields(id, "progress", function (el) {
          if (el.value < Math.floor(seen.percent)) showPercent(id, seen.percent);
        });
      }
    });
  }

  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSettle", scan);
})();
