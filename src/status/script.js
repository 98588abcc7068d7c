// Refreshes the status page's content every 5 s without reloading the page: fetches the same
// URL with partial=1 and swaps the #content element's HTML (rendered and escaped by the server).
(function () {
  var content = document.getElementById("content");
  if (!content) return;
  function refresh() {
    var url = content.getAttribute("data-refresh");
    fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) content.innerHTML = html; })
      .catch(function () {})
      .then(function () { setTimeout(refresh, 5000); });
  }
  setTimeout(refresh, 5000);
})();
