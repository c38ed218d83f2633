// Small behaviours of the chat page; htmx and its SSE extension do the rest.
(function () {
  "use strict";

  function transcript() { return document.getElementById("transcript"); }

  function scrollToEnd() {
    var t = transcript();
    if (t) { t.scrollTop = t.scrollHeight; }
  }

  document.addEventListener("keydown", function (event) {
    var el = event.target;
    if (el && el.id === "prompt" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.form.requestSubmit();
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.id === "chat-form" && event.detail.successful) {
      var hint = document.querySelector(".empty-hint");
      if (hint) { hint.remove(); }
      form.querySelector("#prompt").value = "";
      form.querySelector("#prompt").focus();
    }
  });

  // The SSE extension closes the stream on the "done" event; mark the turn finished.
  document.addEventListener("htmx:sseClose", function (event) {
    var turn = event.target.closest ? event.target.closest(".msg.assistant") : null;
    if (turn) { turn.dataset.state = "done"; }
  });

  // "Copy" next to a key shown once.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    var source = button ? document.querySelector(button.dataset.copy) : null;
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () { button.textContent = "Copied"; });
    }
  });

  document.addEventListener("htmx:afterSwap", scrollToEnd);
  document.addEventListener("htmx:sseMessage", scrollToEnd);
})();
