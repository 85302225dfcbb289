// Quarterdeck dashboard: small progressive enhancements. Every page reads without this file.
(function () {
  "use strict";

  // -- times in the browser's zone -------------------------------------------------------
  // Compact and sortable as text: 2026-12-07 09:22:28, in the browser's zone; the tooltip
  // names the zone and keeps the UTC time the server wrote.
  var zone = (Intl.DateTimeFormat().resolvedOptions().timeZone) || "local time";
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function local(d) {
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " +
      two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  function localize(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.title = zone + " (" + el.textContent + ")";
      el.textContent = local(d);
      el.setAttribute("data-local", "");
    });
  }

  // -- sortable tables -------------------------------------------------------------------
  function cellValue(row, index, kind) {
    var cell = row.children[index];
    if (!cell) return "";
    var raw = cell.getAttribute("data-sort");
    if (raw === null) {
      var t = cell.querySelector("time[datetime]");
      raw = t ? t.getAttribute("datetime") : cell.textContent.trim();
    }
    if (kind === "num") { var n = parseFloat(String(raw).replace(/[$,%\s]/g, "")); return isNaN(n) ? -Infinity : n; }
    return String(raw).toLowerCase();
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table && table.tBodies[0];
    if (!body) return;
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var kind = th.getAttribute("data-sort-kind") || "text";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    th.parentNode.querySelectorAll("th[aria-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  // -- confirmation before destructive posts ---------------------------------------------
  // One <dialog>, appended to <body>, outside every region a live update swaps.
  var dialog = null, pending = null;
  function confirmDialog() {
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.id = "qd-confirm";
    dialog.setAttribute("aria-labelledby", "qd-confirm-text");
    dialog.innerHTML = '<form method="dialog"><p id="qd-confirm-text"></p>' +
      '<div class="actions"><button value="no" class="secondary">Keep it</button> ' +
      '<button value="yes" class="danger" id="qd-confirm-yes">Confirm</button></div></form>';
    document.body.appendChild(dialog);
    dialog.addEventListener("close", function () {
      var p = pending; pending = null;
      if (!p || dialog.returnValue !== "yes") return;
      var yes = document.createElement("input");
      yes.type = "hidden"; yes.name = "confirmed"; yes.value = "yes";
      p.form.appendChild(yes);
      if (p.button && p.button.name) {
        var b = document.createElement("input");
        b.type = "hidden"; b.name = p.button.name; b.value = p.button.value;
        p.form.appendChild(b);
      }
      p.form.setAttribute("data-confirmed", "");
      p.form.submit();
    });
    return dialog;
  }
  document.addEventListener("submit", function (ev) {
    var form = ev.target, button = ev.submitter;
    if (!button || !button.hasAttribute("data-confirm") || form.hasAttribute("data-confirmed")) return;
    ev.preventDefault();
    var d = confirmDialog();
    d.querySelector("#qd-confirm-text").textContent = button.getAttribute("data-confirm");
    pending = { form: form, button: button };
    d.returnValue = "";
    d.showModal();
    d.querySelector("#qd-confirm-yes").focus();
  });

  // -- live regions ----------------------------------------------------------------------
  // A live region ([data-live]) refreshes on its server's signal, except while its person is
  // choosing: a dialog is open, rows in it are selected, or they are typing in it. What they
  // chose or typed is never swapped away.
  function typing(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && active.matches("input, textarea, select")) return true;
    return Array.prototype.some.call(region.querySelectorAll("input:not([type=hidden]), textarea"),
      function (el) { return el.type === "checkbox" ? false : el.value !== el.defaultValue; });
  }
  function busy(region) {
    return !!document.querySelector("dialog[open]") ||
      !!region.querySelector("input[type=checkbox][data-row]:checked") || typing(region);
  }
  document.addEventListener("htmx:beforeRequest", function (ev) {
    var region = ev.detail.elt.closest && ev.detail.elt.closest("[data-live]");
    if (region && ev.detail.elt === region && busy(region)) ev.preventDefault();
  });
  document.addEventListener("htmx:configRequest", function (ev) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) ev.detail.headers["X-CSRF-Token"] = meta.getAttribute("content");
  });

  // -- selection and theme ---------------------------------------------------------------
  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.matches("input[data-select-all]")) {
      var scope = document.getElementById(t.getAttribute("data-select-all"));
      if (scope) scope.querySelectorAll("input[type=checkbox][data-row]").forEach(function (c) { c.checked = t.checked; });
    }
    document.querySelectorAll("[data-selected-count]").forEach(function (el) {
      var scope = document.getElementById(el.getAttribute("data-selected-count"));
      el.textContent = scope ? scope.querySelectorAll("input[type=checkbox][data-row]:checked").length : 0;
    });
  });
  document.addEventListener("click", function (ev) {
    var sort = ev.target.closest && ev.target.closest("th button.sort");
    if (sort) { sortBy(sort.parentNode); return; }
    if (ev.target.closest && ev.target.closest("[data-theme-toggle]")) {
      var root = document.documentElement;
      var dark = root.getAttribute("data-theme") === "dark" ||
        (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { localStorage.setItem("qd-theme", next); } catch (e) { /* private mode */ }
    }
  });

  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:load", function (ev) { localize(ev.detail.elt); });
})();
