// Applies the chosen theme before the page paints (no flash). The toggle lives in app.js.
(function () {
  try {
    var t = localStorage.getItem("qd-theme");
    if (t === "dark" || t === "light") document.documentElement.setAttribute("data-theme", t);
  } catch (e) { /* storage off: follow the system */ }
})();
