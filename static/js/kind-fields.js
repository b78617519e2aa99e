// Admin forms with a "kind" select (an arm's expert depth, its context): show only the fields the
// chosen kind uses. The select names them in data-kind-fields, {"kind": ["field", ...]}, from the same
// table the server checks the form against. A field the server found an error in stays in sight, so the
// error can be read and fixed.
(function () {
  "use strict";

  function row(name) {
    var field = document.getElementById("id_" + name);
    return field && field.closest(".form-row");
  }

  function bind(select) {
    var fields = JSON.parse(select.getAttribute("data-kind-fields"));
    var all = [];
    Object.keys(fields).forEach(function (kind) {
      fields[kind].forEach(function (name) {
        if (all.indexOf(name) < 0) {
          all.push(name);
        }
      });
    });

    function update() {
      var shown = fields[select.value] || [];
      all.forEach(function (name) {
        var element = row(name);
        if (element) {
          var hide = shown.indexOf(name) < 0 && !element.classList.contains("errors");
          element.style.display = hide ? "none" : "";  // the admin's CSS would override [hidden]
        }
      });
    }

    select.addEventListener("change", update);
    update();
  }

  function start() {
    document.querySelectorAll("select[data-kind-fields]").forEach(bind);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
