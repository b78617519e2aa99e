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

  // Reading time: the vote buttons wake once the comparison has been in view for the experiment's
  // minimum reading time; time with the page hidden (another tab) counts neither there nor in the
  // seconds the vote reports.
  var TICK_MS = 100;
  var shown = null;

  function panelState() {
    var form = document.querySelector("#panel form.verdicts");
    if (!form) {
      return null;
    }
    if (!shown || shown.form !== form) {
      shown = { form: form, visible: 0, away: 0, last: Date.now() };
      setVotesAwake(form, Number(form.getAttribute("data-min-seconds")) <= 0);
    }
    return shown;
  }

  function setVotesAwake(form, awake) {
    var buttons = form.querySelectorAll("button[data-key]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].disabled = !awake;
    }
  }

  function tick() {
    var state = panelState();
    if (!state) {
      return;
    }
    var now = Date.now();
    var seconds = (now - state.last) / 1000;
    state.last = now;
    if (document.visibilityState === "visible") {
      state.visible += seconds;
    } else {
      state.away += seconds;
    }
    var away = state.form.querySelector("[data-away-seconds]");
    if (away) {
      away.value = state.away.toFixed(1);
    }
    var minimum = Number(state.form.getAttribute("data-min-seconds")) || 0;
    var bar = state.form.querySelector("[data-reading]");
    if (bar) {
      bar.value = Math.min(state.visible, minimum);
    }
    if (state.visible >= minimum) {
      setVotesAwake(state.form, true);
    }
  }

  setInterval(tick, TICK_MS);
  document.addEventListener("visibilitychange", tick);
  document.addEventListener("htmx:afterSettle", tick);
  tick();
})();
