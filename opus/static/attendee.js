/* The attendee page with JavaScript: votes go to the server with an event_id chosen here and
   kept in localStorage until the server answers, so a vote made during a Wi-Fi drop is sent
   when the network returns (on "online", on a timer, on the next page load) and, whatever
   happens in between, counted once. A vote goes on the page's live socket when it is open
   (see docs/api.md on votes over the socket), else to the API with a POST; the answers are
   the same. The page shows each vote's receipt: saved on this phone, received (queued), counted.
   Without JavaScript the same forms simply POST. */
"use strict";
(function () {
  var boot = Opus.boot(), offset = Opus.clockOffset(boot);
  var OUTBOX = "opus.outbox", UPVOTED = "opus.upvoted";
  Opus.me = boot.name || "";  // this phone's name on a leaderboard
  var inflight = {}, held = {}, watching = {}, refreshTimer = null, snapshots = 0, live = null;
  var SOCKET_ANSWER_MS = 15000;  // a vote sent on the socket and not answered by then goes again
  var onSocket = {};  // event id -> the vote sent on the socket, waiting for its answer
  // What a refused vote says (the API's own messages are English); the same words as the
  // page says without JavaScript (views/attendee.py), in the page's language.
  var FRIENDLY = {
    already_voted: Opus.t("You have already voted in this poll."),
    poll_not_open: Opus.t("This poll is closed: your vote was not counted."),
    time_up: Opus.t("Time is up for this question: your answer was not counted."),
    poll_not_found: Opus.t("This poll is not open."),
    wrong_room: Opus.t("This poll belongs to another room: open its page to vote."),
    bad_token: Opus.t("Join the room again to vote."),
    passcode_required: Opus.t("This room needs its passcode: type the one the host shows or tells."),
    empty_text: Opus.t("Write something first."),
    no_option: Opus.t("Choose an answer first."),
    invalid_option: Opus.t("That answer is not one of this poll's: reload the page and try again."),
    question_not_found: Opus.t("That question is no longer in this poll.")
  };
  function friendly(code) {
    if (code === "too_many_identities" && boot.identities_per_address) {
      return Opus.nt(
        "This network address has already joined this room %(num)d time, the most allowed for one device. Use the phone that joined before, or ask the host.",
        "This network address has already joined this room %(num)d times, the most allowed for one device. Use the phone that joined before, or ask the host.",
        boot.identities_per_address);
    }
    return FRIENDLY[code];
  }
  // Why the server did not count a vote (its receipt's reason).
  var NOT_COUNTED = {
    already_voted: Opus.t("Not counted: you had already voted in this poll."),
    replaced: Opus.t("Not counted: a later answer of yours was counted instead."),
    time_up: Opus.t("Not counted: time was up."),
    invalid_option: Opus.t("Not counted: that answer is not one of this poll's."),
    question_not_found: Opus.t("Not counted: that question is no longer shown."),
    question_hidden: Opus.t("Not counted: that question is no longer shown.")
  };

  function read(key, fallback) {
    try { return JSON.parse(localStorage.getItem(key)) || fallback; } catch (e) { return fallback; }
  }
  function write(key, value) {
    try { localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* private mode: memory only */ }
  }
  var memory = read(OUTBOX, []);
  function outbox() { return read(OUTBOX, memory); }
  function keep(list) { memory = list; write(OUTBOX, list); }
  function drop(eventId) { keep(outbox().filter(function (v) { return v.event_id !== eventId; })); }
  function queued(eventId) { return outbox().some(function (v) { return v.event_id === eventId; }); }
  Opus.upvoted = function () { return read(UPVOTED, {}); };

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // crypto.randomUUID needs a secure context; a venue's http://10.0.0.5 is not one.
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function bodyOf(form, submitter) {
    var data = new FormData(form);
    if (submitter && submitter.name) data.set(submitter.name, submitter.value);
    var kind = form.getAttribute("data-kind");
    if (kind === "multiple") return { option_ids: data.getAll("option") };
    if (kind === "single" || kind === "quiz") return { option_ids: data.get("option") ? [data.get("option")] : [] };
    if (kind === "rating") return { value: parseInt(data.get("value"), 10) };
    if (kind === "qa" && data.get("upvote")) return { upvote: data.get("upvote") };
    return { text: String(data.get("text") || "") };
  }

  function card(pollId) { return document.querySelector('[data-poll="' + pollId + '"].card'); }
  function receipt(pollId, state, text, eventId) {
    var c = card(pollId);
    var el = c && c.querySelector("[data-receipt]");
    if (!el) return;
    el.setAttribute("data-state", state);
    if (eventId) el.setAttribute("data-event", eventId);
    el.textContent = text;
  }
  var WORDS = {
    local: Opus.t("Saved on this phone: it is sent as soon as the network is back."),
    busy: Opus.t("Everyone is voting at once: your vote is saved on this phone and sent again in a moment."),
    sending: Opus.t("Sending…"),
    queued: Opus.t("Received, being counted…"),
    counted: Opus.t("Counted.")
  };

  // An HTTP answer as `answered` takes it (the socket's answers come in the same shape).
  function answer(response, json) {
    return { status: response.status, json: json, retry: response.headers.get("Retry-After") };
  }

  // Opening the page makes no voter: the first vote joins the room (which sets the cookie).
  var joining = null;
  function joined() {
    if (boot.joined) return Promise.resolve(null);
    if (!joining) {
      joining = fetch("/api/v1/join", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code: boot.room })
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (json) {
          joining = null;
          if (response.status === 201) {
            // Now a voter: show the inbox, and reopen the socket so notifications come.
            boot.joined = true;
            var hint = document.querySelector("[data-not-joined]");
            if (hint) hint.hidden = true;
            var inbox = document.querySelector("[data-inbox]");
            if (inbox) inbox.hidden = false;
            var you = document.querySelector("[data-you]");
            if (you && json.name) { you.querySelector("b").textContent = json.name; you.hidden = false; }
            Opus.me = json.name || "";
            if (live) live.reconnect();
            return null;
          }
          return answer(response, json);  // refused: said like a vote's refusal
        });
      }, function (error) { joining = null; throw error; });
    }
    return joining;
  }

  function send(item) {
    if (inflight[item.event_id] || (held[item.event_id] || 0) > Date.now()) return;
    inflight[item.event_id] = true;
    var payload = Object.assign({ event_id: item.event_id }, item.body);
    joined().then(function (refusal) {
      if (refusal) return refusal;
      if (boot.joined && live && live.post(Object.assign({ type: "vote", poll_id: item.poll_id }, payload))) {
        // Its answer comes on the socket (message, below); if the socket drops first, or
        // no answer comes, the vote is sent again (same event_id: counted once).
        onSocket[item.event_id] = { item: item, timer: setTimeout(function () { unsent(item.event_id); }, SOCKET_ANSWER_MS) };
        return null;
      }
      return fetch("/api/v1/polls/" + item.poll_id + "/votes", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload)
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (json) {
          return answer(response, json);
        });
      });
    }).then(function (answer) { if (answer) answered(item, answer.status, answer.json, answer.retry); }, function () {
      delete inflight[item.event_id];
      receipt(item.poll_id, "local", WORDS.local);
    });
  }

  // A vote sent on the socket that will get no answer there: free to be sent again.
  function unsent(eventId) {
    var waiting = onSocket[eventId];
    if (!waiting) return;
    clearTimeout(waiting.timer);
    delete onSocket[eventId];
    delete inflight[eventId];
    if (queued(eventId)) receipt(waiting.item.poll_id, "local", WORDS.local);
  }
  // The socket's answer to a vote: the same as the API's (202, or the error's status and body).
  function socketAnswer(msg) {
    var waiting = onSocket[msg.event_id];
    if (!waiting) return;
    clearTimeout(waiting.timer);
    delete onSocket[msg.event_id];
    if (msg.type === "vote_accepted") answered(waiting.item, 202, {}, null);
    else answered(waiting.item, msg.status, { error: msg.error }, msg.retry_after);
  }

  function answered(item, status, json, retryAfter) {
    delete inflight[item.event_id];
    if (status === 202) return accepted(item);
    var code = json.error && json.error.code;
    if (status >= 500 || (status === 429 && code !== "too_many_identities")) {
      // The server is busy (a whole hall voting at once): keep the vote and send it again
      // after Retry-After, spread over as long again so the phones do not all come back
      // in the same instant.
      var wait = Math.min(parseFloat(retryAfter) || 2, 60) * 1000;
      held[item.event_id] = Date.now() + wait + Math.random() * wait;
      setTimeout(function () { if (queued(item.event_id)) send(item); },
                 held[item.event_id] - Date.now() + 10);
      receipt(item.poll_id, "local", WORDS.busy);
      return;
    }
    drop(item.event_id);
    receipt(item.poll_id, "rejected", friendly(code) || (json.error && json.error.message) || Opus.t("Not counted."));
    enable(item.poll_id);
  }

  function accepted(item) {
    drop(item.event_id);
    if (item.body.upvote) {
      var mine = Opus.upvoted(); mine[item.body.upvote] = 1; write(UPVOTED, mine);
      receipt(item.poll_id, "counted", Opus.t("Upvoted."));
    } else if (item.kind === "qa") {
      receipt(item.poll_id, "counted", Opus.t("Your question is in."));
      asked(item);
    } else {
      receipt(item.poll_id, "queued", WORDS.queued, item.event_id);
    }
    refresh();
  }

  function flush() {
    outbox().forEach(function (item) {
      if (Date.now() - item.at > 24 * 3600 * 1000) { drop(item.event_id); return; }
      send(item);
    });
  }

  // A Q&A takes several questions from one phone: the one sent leaves the box, ready for the
  // next (an empty box also lets the refresh bring the card, and the question, up to date).
  function asked(item) {
    var c = card(item.poll_id), box = c && c.querySelector("form.vote textarea");
    if (box && box.value === item.body.text) box.value = "";
    enable(item.poll_id);
  }

  function focusReceipt(pollId, still) {
    var c = card(pollId), el = c && c.querySelector("[data-receipt]");
    if (!el) return;
    el.setAttribute("tabindex", "-1");
    el.focus({ preventScroll: !!still });
  }
  // Where the focus is in the poll list, to put it back after the list is swapped.
  function focusPlace() {
    var el = document.activeElement, c = el && el.closest && el.closest("section.card[data-poll]");
    return c ? { el: el, poll: c.getAttribute("data-poll"), id: el.id, name: el.name, value: el.value } : null;
  }
  function focusBack(place) {
    if (!place || document.activeElement === place.el) return;
    var c = card(place.poll), target = document.contains(place.el) ? place.el : null;
    if (!c) return;
    if (!target && place.id) target = document.getElementById(place.id);
    if (!target && place.name) {
      target = c.querySelector('[name="' + place.name + '"][value="' + CSS.escape(place.value || "") + '"]');
    }
    if (target && !target.disabled && target.getClientRects().length) target.focus({ preventScroll: true });
    else focusReceipt(place.poll, true);
  }

  function enable(pollId) {
    var c = card(pollId);
    if (c) c.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = false; });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-vote")) return;
    event.preventDefault();
    var item = {
      event_id: uuid(), poll_id: form.getAttribute("data-poll"), kind: form.getAttribute("data-kind"),
      room: boot.room, body: bodyOf(form, event.submitter), at: Date.now()
    };
    keep(outbox().concat([item]));  // saved before it is sent: a drop now loses nothing
    receipt(item.poll_id, "sending", WORDS.sending);
    // The button is disabled, which would drop the focus to the page: it goes to what
    // says how the vote fares (scrolled to only for a keyboard, whose focus shows).
    var keyboard = event.submitter && event.submitter.matches(":focus-visible");
    focusReceipt(item.poll_id, !keyboard);
    if (event.submitter) event.submitter.disabled = true;
    send(item);
  });

  // -- receipts of votes the server has: queued until a worker counts them -----------------
  function watch() {
    document.querySelectorAll('[data-receipt][data-event][data-state="queued"]').forEach(function (el) {
      var id = el.getAttribute("data-event");
      if (watching[id]) return;
      watching[id] = 1;
      var tries = 0;
      (function ask() {
        fetch("/api/v1/votes/" + id, { credentials: "same-origin" }).then(function (r) {
          return r.ok ? r.json() : null;
        }).then(function (body) {
          var status = body && body.status;
          var now = document.querySelector('[data-receipt][data-event="' + id + '"]');
          if (status === "counted" || status === "rejected") {
            delete watching[id];
            if (now) {
              now.setAttribute("data-state", status);
              now.textContent = status === "counted" ? WORDS.counted : NOT_COUNTED[body.reason] || Opus.t("Not counted.");
            }
            return;
          }
          tries += 1;
          setTimeout(ask, tries < 20 ? 500 : 5000);
        }, function () { tries += 1; setTimeout(ask, 5000); });
      })();
    });
  }

  // -- the poll list: swapped for the server's when polls open, close or a vote lands --------
  function editing(container) {
    var forms = container.querySelectorAll("form.vote");
    for (var i = 0; i < forms.length; i++) {
      var f = forms[i];
      if (f.querySelector("input[type=radio]:checked, input[type=checkbox]:checked")) return true;
      var t = f.querySelector("input[name=text], textarea");
      if (t && t.value.trim()) return true;
    }
    return false;
  }
  function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      fetch("/j/" + boot.room + "/polls", { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("polls");
        var current = document.getElementById("polls");
        if (!fresh || !current) return;
        var place = focusPlace();
        // Keep a card whose form the attendee is filling in: swap the others.
        current.querySelectorAll("section.card[data-poll]").forEach(function (old) {
          var id = old.getAttribute("data-poll");
          var next = fresh.querySelector('section.card[data-poll="' + id + '"]');
          if (next && editing(old) && next.getAttribute("data-status") === old.getAttribute("data-status")
              && next.getAttribute("data-voted") === old.getAttribute("data-voted")) {
            next.replaceWith(old);
          } else if (next) {  // what the page said of a vote (a question asked) stays said
            var said = old.querySelector("[data-receipt]"), blank = next.querySelector("[data-receipt]");
            if (said && blank && said.textContent.trim() && !blank.textContent.trim()) {
              blank.textContent = said.textContent;
              blank.setAttribute("data-state", said.getAttribute("data-state") || "");
            }
          }
        });
        var folded = current.querySelector("[data-earlier]"), unfolded = fresh.querySelector("[data-earlier]");
        if (folded && unfolded) unfolded.open = folded.open;
        current.replaceWith(fresh);
        look(fresh);
        decorate();
        focusBack(place);
      }, function () { /* offline: the socket's reconnect brings a refresh */ });
    }, 150);
  }

  // The room's theme and accent, as the fresh list says (the host may have changed them).
  function look(list) {
    var html = document.documentElement, style = list.getAttribute("data-look-style");
    if (!list.hasAttribute("data-look-theme")) return;
    html.setAttribute("data-theme", list.getAttribute("data-look-theme"));
    html.toggleAttribute("data-look", !!style);
    if (style) html.setAttribute("style", style); else html.removeAttribute("style");
  }

  function decorate() {
    outbox().forEach(function (item) {  // a vote held back by a busy server still says so
      receipt(item.poll_id, "local", (held[item.event_id] || 0) > Date.now() ? WORDS.busy : WORDS.local);
    });
    document.querySelectorAll("[data-deadline]").forEach(function (el) { Opus.countdown(el, offset); });
    document.querySelectorAll("[data-count-in]").forEach(function (el) {
      var form = el.parentNode.querySelector("form.vote");
      Opus.countIn(el, offset, form);
    });
    watch();
  }

  // -- live: results, poll changes, notifications ---------------------------------------------
  var banner = document.querySelector("[data-connection]"), downSince = 0;
  live = Opus.connect("/ws?room=" + encodeURIComponent(boot.room), {
    status: function (state) {
      if (state === "live") { downSince = 0; banner.hidden = true; return; }
      Object.keys(onSocket).forEach(unsent);  // the socket dropped: their answers will not come
      if (!downSince) downSince = Date.now();
      setTimeout(function () {
        if (downSince && Date.now() - downSince >= 3000) {
          banner.hidden = false;
          banner.textContent = Opus.t("Reconnecting… your answers are kept on this phone meanwhile.");
        }
      }, 3100);
    },
    message: function (msg) {
      if (msg.type === "vote_accepted" || msg.type === "vote_refused") { socketAnswer(msg); return; }
      if (msg.type === "snapshot") { if (snapshots++) refresh(); flush(); return; }
      if (msg.type === "poll" || msg.type === "room") { refresh(); return; }
      if (msg.type === "results") {
        var box = document.querySelector('.card [data-results="' + msg.poll_id + '"]');
        if (box) Opus.renderResults(box, msg);
        return;
      }
      if (msg.type === "notification") {
        var badge = document.querySelector("[data-unread]");
        if (badge) {
          var n = (parseInt(badge.textContent, 10) || 0) + 1;
          badge.textContent = n; badge.hidden = false;
          badge.parentNode.setAttribute("aria-label", Opus.nt("Messages, %(num)d unread", "Messages, %(num)d unread", n));
        }
      }
    }
  });

  window.addEventListener("online", flush);
  setInterval(flush, 4000);
  decorate();
  flush();
})();
