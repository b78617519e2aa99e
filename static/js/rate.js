// Keyboard-first rating: number keys and arrows press the verdict buttons of the shown comparison.
// A static file on purpose: the CSP forbids inline script and eval, so no htmx key filters.
(function () {
  "use strict";
  var KEYS = { "1": "1", "ArrowLeft": "1", "2": "2", "ArrowRight": "2", "3": "3", "4": "4" };

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT" || (target && target.isContentEditable);
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      return;
    }
    var key = KEYS[event.key];
    if (!key) {
      return;
    }
    var button = document.querySelector("#comparison form.verdicts button[data-key='" + key + "']");
    if (button && !button.disabled) {
      event.preventDefault();
      button.click();
    }
  });
})();
