/* The projector: follows the poll the host shows (presenter mode) or opens, animates its
   results as they arrive, and answers a few keys (N/P poll, H results, F full screen, Q join
   panel, ? help). With the host's session, N and P move the phones too (presenter mode). */
"use strict";
(function () {
  var boot = Opus.boot(), offset = Opus.clockOffset(boot);
  var state = { polls: [], results: {}, current: null, curtain: {}, shown: null, pace: "self", presented: null };
  var socket = null;
  var $ = function (sel) { return document.querySelector(sel); };
  var stage = $("[data-stage]"), chart = $("[data-chart]"), curtain = $("[data-curtain]");

  function visible() { return state.polls.filter(function (p) { return p.status !== "draft"; }); }
  function find(id) { return state.polls.filter(function (p) { return p.id === id; })[0] || null; }
  function latest() {
    var open = visible().filter(function (p) { return p.status === "open"; });
    var pool = open.length ? open : visible();
    var key = open.length ? "opened_at" : "closed_at";
    pool.sort(function (a, b) { return String(b[key] || "").localeCompare(String(a[key] || "")); });
    return pool.length ? pool[0].id : null;
  }
  function presenting() { return state.pace === "presenter" && find(state.presented); }
  function followRoom(room) {
    state.pace = room.pace || "self";
    state.presented = room.shown_poll_id || null;
    if (presenting()) state.current = state.presented;
  }
  function hiddenByServer(poll) { return poll.hide_results && poll.status !== "closed"; }
  function curtained(poll) {
    if (hiddenByServer(poll) && !boot.host) return true;  // this socket does not get them
    if (poll.id in state.curtain) return state.curtain[poll.id];
    return hiddenByServer(poll);  // hidden until close, unless the host reveals them (H)
  }

  function render() {
    var poll = state.current && find(state.current);
    if (!poll || poll.status === "draft") {
      stage.setAttribute("data-mode", "welcome");
      $("[data-welcome]").hidden = false; $("[data-current]").hidden = true;
      $("[data-position]").textContent = visible().length ? "" : Opus.t("Waiting for the first poll");
      fit();
      return;
    }
    stage.setAttribute("data-mode", "poll");
    $("[data-welcome]").hidden = true; $("[data-current]").hidden = false;
    var list = visible(), index = list.indexOf(poll);
    $("[data-position]").textContent = Opus.t("Poll %(n)s of %(total)s",
      { n: Opus.number(index + 1), total: Opus.number(list.length) });
    $("[data-status-label]").textContent = poll.status === "open"
      ? (poll.kind === "qa" ? Opus.t("Ask your questions") : poll.kind === "text" ? Opus.t("Answer now") : Opus.t("Vote now"))
      : Opus.t("Closed");
    var question = $("[data-question]");
    if (question.textContent !== poll.question) question.textContent = poll.question;

    var countdown = $("[data-countdown]"), countIn = $("[data-count-in]");
    var startAt = poll.kind === "quiz" && poll.status === "open" ? poll.opened_at || "" : "";
    if (countIn.getAttribute("data-count-in") !== startAt) {
      countIn.setAttribute("data-count-in", startAt);
      countIn.hidden = true;
      Opus.countIn(countIn, offset, null);
    }
    if (poll.kind === "quiz" && poll.status === "open" && poll.deadline) {
      if (countdown.getAttribute("data-deadline") !== poll.deadline) {
        countdown.setAttribute("data-deadline", poll.deadline);
        Opus.countdown(countdown, offset);
      }
      countdown.hidden = false;
    } else {
      countdown.hidden = true; countdown.removeAttribute("data-deadline");
    }

    if (state.shown !== poll.id) {  // another poll: a new chart, which then animates in place
      chart.textContent = "";
      state.shown = poll.id;
    }
    var box = chart.querySelector("[data-results]");
    var results = state.results[poll.id];
    var hide = curtained(poll);
    if (!box) {
      box = document.createElement("div");
      box.setAttribute("data-results", poll.id);
      box.setAttribute("data-leaderboard", "on");
      box.setAttribute("data-heading", "h2");
      chart.append(box);
    }
    box.hidden = hide || !results;
    // A quiz shows how many answered, not what, until it closes.
    chart.classList.toggle("quiz-live", poll.kind === "quiz" && poll.status === "open");
    if (results && !hide) Opus.renderResults(box, results);
    // Everything fits on one projected page: more options, smaller bars.
    var count = poll.kind === "text" || poll.kind === "qa" ? 0 : (poll.options || []).length;
    if (poll.kind === "quiz" && poll.status === "closed") count += 4;  // room for the leaderboard
    chart.setAttribute("data-size", count > 6 ? "small" : count > 4 ? "medium" : "large");
    curtain.hidden = !hide;
    if (hide) {
      $("[data-curtain-why]").textContent = hiddenByServer(poll)
        ? (boot.host ? Opus.t("They appear when the poll closes, or press %(key)s to show them now.", { key: "H" })
                     : Opus.t("They appear when the poll closes."))
        : Opus.t("Press %(key)s to show them.", { key: "H" });
    }
    fit();
  }

  // Everything on one projected page: what would run past its bottom (a long question, many
  // options, the large join panel of a wide screen) is drawn smaller until it fits.
  var show = $(".show"), panel = $(".join-panel"), qr = panel.querySelector(".qr");
  function fit() {
    qr.style.width = "";
    var over = panel.scrollHeight - panel.clientHeight;
    if (over > 0) qr.style.width = Math.max(qr.offsetWidth - over, 0) + "px";
    var scale = 1;
    show.style.removeProperty("--fit");
    while (show.scrollHeight > show.clientHeight && scale > 0.4) {
      scale = Math.max(0.4, scale * Math.min(0.95, show.clientHeight / show.scrollHeight));
      show.style.setProperty("--fit", scale.toFixed(3));
    }
  }

  function move(step) {
    if (state.pace === "presenter" && boot.host && socket) {
      socket.send(step > 0 ? "next" : "previous");  // everyone follows, this screen too
      return;
    }
    var list = visible();
    if (!list.length) return;
    var at = list.indexOf(find(state.current));
    var to = at < 0 ? 0 : Math.min(list.length - 1, Math.max(0, at + step));
    state.current = list[to].id;
    render();
  }

  function message(msg) {
    // The host chose another theme or accent: the server draws the page in it.
    var room = (msg.type === "room" || msg.type === "snapshot") && msg.room;
    if (room && String([room.theme, room.accent]) !== String(boot.look)) { location.reload(); return; }
    if (msg.type === "snapshot" || msg.type === "venue") {
      Opus.renderVenue($("[data-venue]"), msg.type === "venue" ? msg : msg.venue);
    }
    if (msg.type === "snapshot") {
      state.polls = msg.room.polls;
      state.results = {};
      (msg.results || []).forEach(function (r) { state.results[r.poll_id] = r; });
      var still = find(state.current);
      if (!still || still.status === "draft") state.current = latest();
      followRoom(msg.room);
      render();
    } else if (msg.type === "room" && msg.room) {
      state.polls = msg.room.polls;
      followRoom(msg.room);
      render();
    } else if (msg.type === "poll" && msg.status === "deleted") {
      state.polls = state.polls.filter(function (p) { return p.id !== msg.poll_id; });
      if (state.current === msg.poll_id) state.current = latest();
      render();
    } else if (msg.type === "poll") {
      var poll = msg.poll, known = false;
      state.polls = state.polls.map(function (p) { if (p.id === poll.id) { known = true; return poll; } return p; });
      if (!known) state.polls.push(poll);
      state.polls.sort(function (a, b) { return (a.position || 0) - (b.position || 0); });
      if (presenting()) { /* the host shows polls one at a time: stay on the shown one */ }
      else if (poll.status === "open") state.current = poll.id;  // follow the host
      else if (!state.current || !find(state.current) || find(state.current).status === "draft") state.current = latest();
      render();
    } else if (msg.type === "results") {
      state.results[msg.poll_id] = msg;
      if (msg.poll_id === state.current) render();
    }
  }

  var dot = $("[data-connection]");
  socket = Opus.connect(boot.live, {
    message: message,
    status: function (s) {
      dot.setAttribute("data-state", s);
      dot.textContent = s === "live" ? Opus.t("Live") : s === "offline" ? Opus.t("Reconnecting…") : Opus.t("Connecting…");
    }
  });

  // The key hints are the presenter's, not the audience's: they show for a moment when the
  // mouse moves or a key is pressed, and stay while the help is open (?).
  var help = $("[data-help]"), foot = $(".screen-foot"), hintTimer = null;
  function hints() {
    foot.setAttribute("data-hints", "");
    clearTimeout(hintTimer);
    hintTimer = setTimeout(function () { if (help.hidden) foot.removeAttribute("data-hints"); }, 3000);
  }
  document.addEventListener("mousemove", hints);
  document.addEventListener("keydown", hints);
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var key = event.key;
    if (key === "n" || key === "N" || key === "ArrowRight" || key === "PageDown") move(1);
    else if (key === "p" || key === "P" || key === "ArrowLeft" || key === "PageUp") move(-1);
    else if (key === "h" || key === "H") {
      var poll = find(state.current);
      if (poll) { state.curtain[poll.id] = !curtained(poll); render(); }
    } else if (key === "f" || key === "F") {
      if (document.fullscreenElement) document.exitFullscreen();
      else if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(function () {});
    } else if (key === "q" || key === "Q") {
      stage.toggleAttribute("data-big-join");
      fit();
    } else if (key === "?") help.hidden = !help.hidden;
    else if (key === "Escape") help.hidden = true;
    else return;
    hints();
    event.preventDefault();
  });
  window.addEventListener("resize", fit);
  render();
})();
