// nurture console: the only script. Pages work without it; it adds auto-refresh where a page
// asks for it (<main data-refresh="SECONDS">), paused while the tab is hidden or a form field
// has focus, so nobody loses what they are typing.
"use strict";
(function () {
  var main = document.getElementById("main");
  if (!main) return;
  var seconds = parseInt(main.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) return;
  setInterval(function () {
    var active = document.activeElement;
    var typing = active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
    if (document.visibilityState === "visible" && !typing) window.location.reload();
  }, seconds * 1000);
})();
