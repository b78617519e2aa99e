// Keyboard-first rating. Keys press the buttons marked with data-key in the rating panel.
// A static file on purpose: the CSP forbids inline script and eval, so no htmx key filters.
(function () {
  "use strict";
  var ALIASES = { "ArrowLeft": "1", "ArrowRight": "2" };

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT" || (target && target.isContentEditable);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    var panel = document.getElementById("panel");
    if (!panel) {
      return;
    }
    var help = document.getElementById("help");
    if (typing(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
      }
      return;
    }
    if (event.key === "?") {
      event.preventDefault();
      if (help.open) { help.close(); } else { help.showModal(); }
      return;
    }
    if (help && help.open) {
      return;
    }
    if (event.key === "f") {
      var reason = panel.querySelector("[data-flag-reason]");
      if (reason) {
        event.preventDefault();
        reason.focus();
      }
      return;
    }
    var key = ALIASES[event.key] || event.key;
    if (key === "Enter") {
      return;  // Enter keeps its usual meaning on the focused button
    }
    var button = panel.querySelector("button[data-key='" + key + "']");
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });
})();
