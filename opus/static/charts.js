/* Results views for every page. The server renders the first state (pages work without
   JavaScript); these functions keep the same markup up to date in place, keyed by option,
   word and question, so CSS transitions animate the change instead of redrawing it. */
"use strict";
window.Opus = window.Opus || {};

(function () {
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // A translated sentence whose %(name)s are elements (a count in bold), as the server
  // writes it: `nodes` maps each name to its element.
  function sentence(holder, text, nodes) {
    holder.textContent = "";
    text.split(/(%\(\w+\)[sd])/).forEach(function (part) {
      var name = /^%\((\w+)\)[sd]$/.exec(part);
      if (name && nodes[name[1]]) holder.append(nodes[name[1]]);
      else if (part) holder.append(part);
    });
  }
  // The total under the results: "12 votes", with the number in its own element.
  function totalSentence(kind, n) {
    var keep = { num: "%(num)s" };  // the sentence with its number's place, for `sentence`
    if (kind === "qa") return Opus.nt("%(num)s question", "%(num)s questions", n, keep);
    if (kind === "text" || kind === "quiz") return Opus.nt("%(num)s answer", "%(num)s answers", n, keep);
    return Opus.nt("%(num)s vote", "%(num)s votes", n, keep);
  }

  function bars(box, results) {
    var list = box.querySelector(".bars");
    if (!list) { list = el("ol", "bars"); box.prepend(list); }
    var seen = {};
    results.options.forEach(function (o, i) {
      seen[o.id] = true;
      var item = list.querySelector('[data-option="' + o.id + '"]');
      if (!item) {
        item = el("li", "bar");
        item.setAttribute("data-option", o.id);
        var label = el("span", "bar-label");
        var count = el("span", "bar-count");
        count.append(el("b"), " ", el("small"));
        count.firstChild.setAttribute("data-votes", "");
        count.lastChild.setAttribute("data-percent", "");
        var track = el("span", "bar-track");
        track.setAttribute("aria-hidden", "true");
        track.append(el("span", "bar-fill"));
        item.append(label, count, track);
        list.append(item);
      }
      if (list.children[i] !== item) list.insertBefore(item, list.children[i]);
      var label = item.querySelector(".bar-label");
      if (label.textContent !== (o.correct ? "✓ " : "") + o.label) {
        label.textContent = "";
        if (o.correct) {
          var tick = el("span", "tick", "✓");
          tick.setAttribute("aria-label", Opus.t("right answer"));
          label.append(tick, " ");
        }
        label.append(o.label);
      }
      item.classList.toggle("correct", !!o.correct);
      // An open quiz's counts are the host's until it closes: null for everyone else.
      item.querySelector("[data-votes]").textContent = o.votes == null ? "–" : Opus.number(o.votes);
      item.querySelector("[data-percent]").textContent = o.percent == null ? ""
        : Opus.number(Math.round(o.percent) / 100, { style: "percent" });
      item.querySelector(".bar-fill").style.width = (o.percent || 0) + "%";
    });
    Array.prototype.slice.call(list.children).forEach(function (item) {
      if (!seen[item.getAttribute("data-option")]) item.remove();
    });
    if (results.kind === "rating") {
      var avg = box.querySelector(".average");
      if (!avg) {
        avg = el("p", "average");
        var b = el("b"); b.setAttribute("data-average", "");
        sentence(avg, Opus.t("Average %(average)s out of %(scale)s"),
                 { average: b, scale: document.createTextNode(Opus.number(results.options.length)) });
        list.after(avg);
      }
      avg.querySelector("[data-average]").textContent = results.average == null ? "–" : Opus.number(results.average);
    }
  }

  function cloud(box, results) {
    var words = results.words || [];
    var holder = box.querySelector(".cloud");
    if (!holder) { holder = el("p", "cloud"); box.prepend(holder); }
    var top = words.length ? words[0].count : 1, seen = {};
    words.forEach(function (w) {
      seen[w.word] = true;
      var span = null;
      for (var i = 0; i < holder.children.length; i++) {
        if (holder.children[i].getAttribute("data-word") === w.word) { span = holder.children[i]; break; }
      }
      if (!span) {
        span = el("span", "word", w.word);
        span.setAttribute("data-word", w.word);
        holder.append(span, " ");
      }
      span.setAttribute("data-count", w.count);
      span.style.fontSize = (0.9 + 2.1 * w.count / top).toFixed(2) + "em";
      span.title = Opus.nt("%(num)s answer", "%(num)s answers", w.count, { num: Opus.number(w.count) });
    });
    Array.prototype.slice.call(holder.children).forEach(function (span) {
      if (!seen[span.getAttribute("data-word")]) span.remove();
    });
    empty(box, !words.length, Opus.t("No answers yet."));
  }

  function questions(box, results) {
    var list = box.querySelector(".questions");
    if (!list) { list = el("ol", "questions"); box.prepend(list); }
    var action = box.getAttribute("data-upvote-action"), csrf = box.getAttribute("data-csrf");
    var mine = Opus.upvoted ? Opus.upvoted() : {};
    // What the audience sees: a screen on the host's socket also gets pending and hidden ones.
    var shown = (results.questions || []).filter(function (q) { return !q.status || q.status === "visible"; });
    var items = shown.map(function (q) {
      var li = list.querySelector('[data-question="' + q.id + '"]');
      if (!li) {
        li = el("li", "qa-item");
        li.setAttribute("data-question", q.id);
        li.append(el("span", "q-text", q.text), el("span", "q-meta"));
      }
      li.classList.toggle("pinned", !!q.pinned);
      li.classList.toggle("answered", !!q.answered);
      var meta = li.querySelector(".q-meta");
      meta.textContent = "";
      if (q.pinned) meta.append(el("span", "tag tag-pin", Opus.t("Pinned")));
      if (q.answered) meta.append(el("span", "tag tag-done", Opus.t("Answered")));
      var count = el("b", "", Opus.number(q.upvotes)); count.setAttribute("data-upvotes", "");
      if (action && results.status === "open") {
        var form = el("form", "upvote");
        form.method = "post"; form.action = action;
        form.setAttribute("data-vote", ""); form.setAttribute("data-kind", "qa");
        form.setAttribute("data-poll", results.poll_id);
        var hidden = el("input"); hidden.type = "hidden"; hidden.name = "csrf"; hidden.value = csrf;
        var button = el("button", "upvote-button");
        button.type = "submit"; button.name = "upvote"; button.value = q.id;
        if (mine[q.id]) { button.disabled = true; button.setAttribute("aria-pressed", "true"); }
        // The name starts with what shows (the count), then says which question (WCAG 2.5.3).
        var shown = el("span", "", "▲ "); shown.setAttribute("aria-hidden", "true"); shown.append(count);
        var said = el("span", "sr-only", Opus.nt("%(num)d upvote. Upvote: %(question)s",
          "%(num)d upvotes. Upvote: %(question)s", q.upvotes, { num: Opus.number(q.upvotes), question: q.text }));
        button.append(shown, said);
        form.append(hidden, button);
        meta.append(form);
      } else {
        var span = el("span", "upvotes", "▲ "); span.append(count); meta.append(span);
      }
      return li;
    });
    list.textContent = "";
    items.forEach(function (li) { list.append(li); });
    empty(box, !items.length, Opus.t("No questions yet."));
  }

  function empty(box, isEmpty, text) {
    var note = box.querySelector("[data-empty]");
    if (isEmpty && !note) { note = el("p", "empty", text); note.setAttribute("data-empty", ""); box.append(note); }
    if (!isEmpty && note) note.remove();
  }

  function leaderboard(box, results) {
    if (!results.leaderboard) return;
    var holder = box.querySelector(".leaderboard-box");
    if (!holder) {
      if (results.status !== "closed" && box.getAttribute("data-leaderboard") !== "on") return;
      holder = el("div", "leaderboard-box");
      // Its heading's level follows the page's: under the screen's h1, an h2.
      holder.append(el(box.getAttribute("data-heading") || "h3", "", Opus.t("Leaderboard")), el("ol", "leaderboard"));
      box.append(holder);
    }
    var list = holder.querySelector(".leaderboard");
    list.textContent = "";
    var rank = 0, points = null;
    results.leaderboard.forEach(function (p, i) {
      if (p.points !== points) { rank = i + 1; points = p.points; }  // a tie shares its rank
      var li = el("li"), who = el("span", "who", p.name);
      if (Opus.me && p.name === Opus.me) { li.className = "you"; who.append(" ", el("small", "", Opus.t("(you)"))); }
      li.append(el("span", "rank", Opus.number(rank)), " ", who, " ", el("b", "", Opus.number(p.points)));
      list.append(li);
    });
    holder.hidden = !results.leaderboard.length;
  }

  Opus.renderResults = function (box, results) {
    var kind = results.kind || box.getAttribute("data-kind") || "single";
    box.setAttribute("data-kind", kind);
    box.className = "results results-" + kind;
    if (kind === "text") cloud(box, results);
    else if (kind === "qa") questions(box, results);
    else bars(box, results);
    var total = box.querySelector(".total");
    if (!total) {
      total = el("p", "total");
      var leader = box.querySelector(".leaderboard-box");
      if (leader) box.insertBefore(total, leader); else box.append(total);
    }
    var b = el("b", "", Opus.number(results.total_votes)); b.setAttribute("data-total", "");
    sentence(total, totalSentence(kind, results.total_votes), { num: b });
    if (kind === "quiz") leaderboard(box, results);
  };
})();
