// asana-worker status page: re-fetches the page every few seconds (data-refresh on <body>, in
// seconds; 0 turns it off) and swaps in its live part, without a full reload. The server renders
// and escapes everything; this script only moves server HTML from one document to another.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var every = Number(document.body.getAttribute("data-refresh") || "0") * 1000;
  var stamp = document.getElementById("refreshed");
  if (!live || !every) {
    return;
  }
  function later() {
    window.setTimeout(refresh, every);
  }
  function refresh() {
    if (document.hidden) {
      later();
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (fresh) {
          live.innerHTML = fresh.innerHTML;
        }
        document.body.classList.remove("stale");
        if (stamp) {
          stamp.textContent = "Updated " + new Date().toLocaleTimeString();
        }
      })
      .catch(function (error) {
        document.body.classList.add("stale");
        if (stamp) {
          stamp.textContent = "Cannot reach the daemon (" + error.message + "); retrying";
        }
      })
      .then(later);
  }
  later();
})();
