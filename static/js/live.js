// Live results: a WebSocket tells the page that its experiment changed; htmx then re-fetches the
// live part. Without WebSockets the part still refreshes on its own timer (hx-trigger "every").
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.WebSocket) {
    return;
  }
  var path = live.getAttribute("data-ws");
  var delay = 1000;

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + path);
    socket.onopen = function () { delay = 1000; };
    socket.onmessage = function () { htmx.trigger(document.body, "experiment-changed"); };
    socket.onclose = function (event) {
      if (event.code === 4403) {
        return;
      }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
