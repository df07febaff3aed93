/* The host console with JavaScript: the live activity feed and results, the poll form's
   fields for the chosen kind, a confirmation before deleting. Everything works without it. */
"use strict";
(function () {
  // Only the chosen kind's fields (without JavaScript they are all shown, each labelled).
  document.querySelectorAll("[data-kind-select]").forEach(function (select) {
    var form = select.form;
    function show() {
      form.querySelectorAll("[data-kinds]").forEach(function (box) {
        box.hidden = box.getAttribute("data-kinds").split(" ").indexOf(select.value) < 0;
      });
    }
    select.addEventListener("change", show);
    show();
  });

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  if (!window.Opus || !Opus.connect) return;  // the edit page has no live part
  var boot = Opus.boot();
  if (!boot.live) return;
  var dot = document.querySelector("[data-connection]"), reloadTimer = null;

  // The time a vote takes to be counted (99 votes in 100, in ms): said in seconds, rounded
  // up, as the "within" before it promises; nothing when no vote was counted lately.
  function seconds(ms) {
    if (!(ms > 0)) return "–";
    var s = Math.ceil(ms / 100) / 10, digits = s < 10 ? 1 : 0;
    if (!digits) s = Math.ceil(s);
    var shown = s.toLocaleString(Opus.lang, { minimumFractionDigits: digits, maximumFractionDigits: digits });
    return Opus.t("%(seconds)s s", { seconds: shown });
  }

  function busy() {
    var el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") && el.value;
  }
  // A poll shown from the projector's keys, another tab or the API: the console follows.
  function followRoom(room) {
    var bar = document.querySelector("[data-presenter]");
    var pace = bar ? "presenter" : "self";
    if (room.pace !== pace || (bar && bar.getAttribute("data-shown-poll") !== (room.shown_poll_id || ""))) reloadSoon();
  }
  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(function () { if (busy()) reloadSoon(); else location.reload(); }, 400);
  }
  // A Q&A's moderation list, fetched again when its results move. Swapping it between the
  // press and the release of a button would eat the host's click (the button pressed is gone
  // when it is released), so while a button is held the swap waits for the release.
  var held = false, waiting = {};
  document.addEventListener("pointerdown", function (event) {
    held = !!(event.target.closest && event.target.closest("[data-moderation]"));
  }, true);
  function release() {
    if (!held) return;
    held = false;
    setTimeout(function () {  // after the click that this release makes
      Object.keys(waiting).forEach(function (pollId) { delete waiting[pollId]; questions(pollId); });
    }, 0);
  }
  document.addEventListener("pointerup", release, true);
  document.addEventListener("pointercancel", release, true);
  function questions(pollId) {
    fetch("/host/polls/" + pollId + "/questions", { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html) return;
      var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-moderation]");
      var old = document.querySelector('[data-moderation="' + pollId + '"]');
      if (!fresh || !old || fresh.outerHTML === old.outerHTML) return;
      if (held) { waiting[pollId] = 1; return; }
      old.replaceWith(fresh);
    });
  }

  Opus.connect(boot.live, {
    status: function (s) {
      dot.setAttribute("data-state", s);
      dot.textContent = s === "live" ? Opus.t("Live") : s === "offline" ? Opus.t("Reconnecting…") : Opus.t("Connecting…");
    },
    message: function (msg) {
      if (msg.type === "snapshot" || msg.type === "venue") {
        Opus.renderVenue(document.querySelector("[data-venue]"), msg.type === "venue" ? msg : msg.venue);
      }
      if (msg.type === "snapshot" && msg.room) followRoom(msg.room);  // what changed before it
      if (msg.type === "snapshot") {
        // (Re)connected: what changed between the page's render and now came before the
        // socket, so the results are drawn from the snapshot and the Q&A lists fetched again.
        (msg.results || []).forEach(function (r) {
          var box = document.querySelector('[data-results="' + r.poll_id + '"]');
          if (box) Opus.renderResults(box, r);
        });
        document.querySelectorAll('[data-poll][data-kind="qa"]').forEach(function (card) {
          questions(card.getAttribute("data-poll"));
        });
      } else if (msg.type === "activity") {
        document.querySelectorAll("[data-stat]").forEach(function (el) {
          var value = msg[el.getAttribute("data-stat")];
          if (value === undefined) return;
          el.textContent = el.hasAttribute("data-seconds") ? seconds(value)
            : typeof value === "number" ? value.toLocaleString(Opus.lang) : value;
        });
      } else if (msg.type === "results") {
        var box = document.querySelector('[data-results="' + msg.poll_id + '"]');
        if (box) Opus.renderResults(box, msg);
        var card = document.querySelector('[data-poll="' + msg.poll_id + '"]');
        if (card && card.getAttribute("data-kind") === "qa") questions(msg.poll_id);
      } else if (msg.type === "room" && msg.room) {
        followRoom(msg.room);
      } else if (msg.type === "poll") {
        var el = document.querySelector('[data-poll="' + msg.poll_id + '"]');
        // Changed elsewhere (another tab, the API): show the console as it now is.
        if (!el || el.getAttribute("data-status") !== msg.status) reloadSoon();
      }
    }
  });
})();
