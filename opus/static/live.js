/* The live socket every page shares: reconnects by itself with a growing, randomized delay
   (a hall of phones must not come back at the same instant), notices a silent drop with its
   own pings, and skips messages older than what it already showed (see docs/api.md, seq). */
"use strict";
window.Opus = window.Opus || {};

/* The page's language: its strings for the scripts (from the server's catalogs), and plural
   forms chosen by the same rules as gettext's for each shipped language. */
(function () {
  var el = document.getElementById("opus-i18n"), messages = {};
  try { messages = el ? JSON.parse(el.textContent) : {}; } catch (e) { messages = {}; }
  var lang = document.documentElement.lang || "en";
  var rules = {
    ar: function (n) { var m = n % 100; return n === 0 ? 0 : n === 1 ? 1 : n === 2 ? 2 : m >= 3 && m <= 10 ? 3 : m >= 11 ? 4 : 5; },
    es: function (n) { return n === 1 ? 0 : n !== 0 && n % 1000000 === 0 ? 1 : 2; },
    fr: function (n) { return n === 0 || n === 1 ? 0 : n % 1000000 === 0 ? 1 : 2; },
    ja: function () { return 0; }
  };
  function fill(text, values) {
    return values ? text.replace(/%\((\w+)\)[sd]/g, function (all, name) { return name in values ? values[name] : all; }) : text;
  }
  Opus.lang = lang;
  /* Opus.t("Counted.") and Opus.t("%(n)s left", {n: 3}) */
  Opus.t = function (text, values) {
    var found = messages[text];
    return fill(typeof found === "string" ? found : text, values);
  };
  /* Opus.nt("%(num)d vote", "%(num)d votes", n): the form for n, with num filled in */
  Opus.nt = function (one, many, n, values) {
    var forms = messages[one], all = Object.assign({ num: n }, values || {});
    if (Array.isArray(forms)) return fill(forms[(rules[lang] || function (k) { return k === 1 ? 0 : 1; })(n)] || forms[forms.length - 1], all);
    return fill(n === 1 ? one : many, all);
  };
})();

/* A number as the page's language writes it (1,234 / 1 234 / 1.234; percents with
   {style: "percent"}), in the digits the server's pages use (Babel's: Latin ones). */
Opus.number = function (n, options) {
  try { return Number(n).toLocaleString(Opus.lang + "-u-nu-latn", options); } catch (e) { return String(n); }
};

Opus.boot = function () {
  var el = document.getElementById("opus-boot");
  return el ? JSON.parse(el.textContent) : {};
};

Opus.connect = function (path, handlers) {
  var socket = null, delay = 500, timer = null, pinger = null, lastHeard = 0;
  var snapshotSeq = 0, pollSeq = {}, closedByUs = false;

  function url() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var last = Math.max(snapshotSeq, 0);
    return scheme + location.host + path + (last ? "&seq=" + last : "");
  }
  function status(state) { if (handlers.status) handlers.status(state); }
  function schedule() {
    if (timer || closedByUs) return;
    var wait = delay * (0.5 + Math.random());
    delay = Math.min(delay * 2, 30000);
    status("offline");
    timer = setTimeout(function () { timer = null; open(); }, wait);
  }
  function fresh(msg) {
    if (msg.type === "snapshot") { snapshotSeq = msg.seq || 0; pollSeq = {}; return true; }
    if (typeof msg.seq !== "number" || !msg.poll_id) return true;
    var key = msg.type + ":" + msg.poll_id;
    if (msg.seq <= snapshotSeq || msg.seq <= (pollSeq[key] || 0)) return false;
    pollSeq[key] = msg.seq;
    return true;
  }
  function open() {
    if (socket && socket.readyState <= 1) return;
    status("connecting");
    try { socket = new WebSocket(url()); } catch (e) { schedule(); return; }
    socket.onopen = function () { delay = 500; lastHeard = Date.now(); status("live"); };
    socket.onmessage = function (event) {
      lastHeard = Date.now();
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "pong" || !fresh(msg)) return;
      handlers.message(msg);
    };
    socket.onclose = function () { socket = null; schedule(); };
    socket.onerror = function () { if (socket) socket.close(); };
  }
  // A socket whose network vanished can look open for minutes: ping, and give up on silence.
  pinger = setInterval(function () {
    if (!socket || socket.readyState !== 1) return;
    if (Date.now() - lastHeard > 25000) { socket.close(); return; }
    try { socket.send('{"type":"ping"}'); } catch (e) { /* closing already */ }
  }, 10000);
  function now() { delay = 500; if (timer) { clearTimeout(timer); timer = null; } open(); }
  window.addEventListener("online", now);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && (!socket || socket.readyState > 1)) now();
  });
  open();
  return {
    resume: function () { if (socket && socket.readyState === 1) socket.send('{"type":"resume"}'); },
    send: function (type) { if (socket && socket.readyState === 1) socket.send(JSON.stringify({ type: type })); },
    // A message with a body (a vote): whether it went out on an open socket.
    post: function (msg) {
      if (!socket || socket.readyState !== 1) return false;
      try { socket.send(JSON.stringify(msg)); return true; } catch (e) { return false; }
    },
    // Open a new socket now (the page's voter changed: a first vote joined the room).
    reconnect: function () {
      if (socket) { socket.onclose = null; socket.close(); socket = null; }
      now();
    },
    close: function () { closedByUs = true; clearInterval(pinger); if (socket) socket.close(); }
  };
};

/* Server time minus this device's clock, so countdowns agree with the server's deadline. */
Opus.clockOffset = function (boot) {
  return boot.server_now ? boot.server_now - Date.now() : 0;
};

Opus.countdown = function (el, offset) {
  var deadline = Date.parse(el.getAttribute("data-deadline"));
  if (isNaN(deadline)) return;
  function tick() {
    var left = Math.max(0, Math.ceil((deadline - (Date.now() + offset)) / 1000));
    // Minutes from a minute up ("7:43"): a count of hundreds of seconds reads slowly.
    var clock = left >= 60 ? Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0")
      : Opus.t("%(seconds)s s", { seconds: Opus.number(left) });
    el.textContent = left > 0 ? clock : Opus.t("Time is up");
    el.classList.toggle("urgent", left <= 5);
    if (left > 0 && el.isConnected) setTimeout(tick, 250);
  }
  tick();
};

/* A quiz shown in a presenter-paced room starts a few seconds after it appears: say so, and
   keep its form (if any) hidden until then. */
Opus.countIn = function (el, offset, form) {
  var start = Date.parse(el.getAttribute("data-count-in"));
  if (isNaN(start)) return;
  function tick() {
    var left = Math.ceil((start - (Date.now() + offset)) / 1000);
    var waiting = left > 0 && el.isConnected;
    el.hidden = !waiting;
    if (form) form.hidden = waiting;
    if (waiting) {
      el.textContent = Opus.t("Get ready: the question starts in %(seconds)s…", { seconds: Opus.number(left) });
      setTimeout(tick, 200);
    }
  }
  tick();
};

/* In a venue of several boxes: say which boxes this one cannot reach (their votes count once
   they are back), and how many of their events are still on the way; say nothing otherwise. */
Opus.renderVenue = function (el, venue) {
  if (!el || !venue) return;
  var parts = [];
  (venue.unreachable || []).forEach(function (box) {
    parts.push(Opus.t("Box %(box)s is out of reach: its votes will count when it is back.", { box: box }));
  });
  Object.keys(venue.behind || {}).forEach(function (box) {
    if ((venue.unreachable || []).indexOf(box) < 0) {
      var n = venue.behind[box];
      parts.push(Opus.nt("%(num)s vote or change from box %(box)s on the way.",
        "%(num)s votes and changes from box %(box)s on the way.", n, { num: Opus.number(n), box: box }));
    }
  });
  el.textContent = parts.join(" ");
  el.hidden = parts.length === 0;
};
