// nurture console: the only script. Pages work without it; it adds auto-refresh where a page
// asks for it (<main data-refresh="SECONDS">), paused while the tab is hidden or anything on
// the page has focus, so nobody loses what they are typing or where the keyboard was.
"use strict";
(function () {
  var main = document.getElementById("main");
  if (!main) return;
  var seconds = parseInt(main.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) return;
  setInterval(function () {
    var active = document.activeElement;
    var idle = !active || active === document.body || active === main;
    if (document.visibilityState === "visible" && idle) window.location.reload();
  }, seconds * 1000);
})();
