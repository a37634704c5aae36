// The arena's live view: follows one battle's event log over Server-Sent Events.
//
// The log (README, "Events") is the single source of truth: every event carries its seq as the SSE
// id, so a dropped connection resumes where it stopped and a finished battle replays in full.
// With `replay` in the config (the admin's replay page) the same view plays a stored log at a
// chosen speed, with Play, Pause, Speed and Restart (see "Replay controls" below).
// Below the agents, the document panel shows the document's lines (config.documentUrl): the quotes
// in the turns link to them, and the lines both sides quote are marked as contested.
// Untrusted text (the document, its name, model output, error messages) only ever enters the page
// through textContent or text nodes, never as HTML.
"use strict";

(() => {
  const ROLES = ["aggressor", "defender", "moderator"];
  const STATE_TEXT = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    finished: "Finished",
    failed: "Failed",
    playing: "Playing",
    paused: "Paused",
  };
  const WINNER_TEXT = { aggressor: "Aggressor wins", defender: "Defender wins", draw: "Draw" };
  const SIDES = ["aggressor", "defender"];
  const SIDE_NAME = { aggressor: "Aggressor", defender: "Defender" };
  const PENDING_TEXT = "The Moderator is writing the verdict…";
  // The document panel folds away below this width (the same breakpoint as in arena.css).
  const PHONE_QUERY = "(max-width: 700px)";
  const FLAG_TITLE =
    "This line addresses an AI, not a reader: the agents are told to scrutinise it, never obey it";
  // A line quoted this many times or more gets the hottest mark.
  const HEAT_LEVELS = 4;
  // A citation claiming more lines than this is not believed (the lines are not marked).
  const MAX_CITED_LINES = 500;
  // First wait before reopening a stream the browser gave up on (an HTTP error closes an
  // EventSource for good); it doubles on each failure so a missing battle is not hammered.
  const RECONNECT_DELAY_MS = 2000;
  const RECONNECT_MAX_DELAY_MS = 30000;
  // A panel scrolled to within this many pixels of its end follows new text; further up, the
  // reader is reading something older and is left alone.
  const STICK_THRESHOLD_PX = 48;

  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("arena-config").textContent);

  const els = {
    status: $("connection-status"),
    roundCounter: $("round-counter"),
    spectators: $("spectators"),
    truncated: $("truncated-note"),
    scoreAggressor: $("score-aggressor"),
    scoreDefender: $("score-defender"),
    scoreLabel: $("score-label"),
    roundScores: $("round-scores"),
    verdict: $("verdict"),
    verdictWinner: $("verdict-winner"),
    verdictSummary: $("verdict-summary"),
    verdictFallback: $("verdict-fallback"),
    verdictPending: $("verdict-pending"),
    verdictPendingText: $("verdict-pending-text"),
    juryVotes: $("jury-votes"),
    verdictEyebrow: $("verdict-eyebrow"),
    verdictEvidence: $("verdict-evidence"),
    verdictJury: $("verdict-jury"),
    juryAgreement: $("jury-agreement"),
    juryList: $("jury-list"),
    verdictModerator: $("verdict-moderator"),
    docPanel: $("document-panel"),
    docToggle: $("document-toggle"),
    docFlags: $("document-flags"),
    docFlagsText: $("document-flags-text"),
    docFlagsLines: $("document-flags-lines"),
    docStatus: $("document-status"),
    docLines: $("document-lines"),
    failure: $("failure"),
    errorMessage: $("error-message"),
    retryForm: $("retry-form"),
    usage: $("usage"),
    // Absent on pages without a Retry form or share box (the replay).
    share: $("share-link"),
    copy: $("copy-share"),
    copyStatus: $("copy-status"),
    // Only on the replay page.
    play: $("replay-play"),
    pause: $("replay-pause"),
    speed: $("replay-speed"),
    restart: $("replay-restart"),
  };
  const baseTitle = document.title;

  // ---- Panels and auto-scroll -----------------------------------------------------------------

  const panels = {};
  for (const role of ROLES) {
    const section = $(`panel-${role}`);
    const body = section.querySelector(".panel-body");
    const panel = { role, section, body, stick: true, ourTop: -1 };
    body.addEventListener(
      "scroll",
      () => {
        // Our own scrolling says nothing about the reader; only theirs changes `stick`.
        if (Math.abs(body.scrollTop - panel.ourTop) < 2) return;
        panel.stick = body.scrollHeight - body.scrollTop - body.clientHeight <= STICK_THRESHOLD_PX;
      },
      { passive: true },
    );
    panels[role] = panel;
  }

  // Token text is buffered and written once per animation frame: a finished battle replays its
  // whole log in a burst, and one DOM write per token would stall the page.
  const dirtyTurns = new Set();
  const dirtyPanels = new Set();
  let frame = 0;

  function schedule(panel) {
    if (panel) dirtyPanels.add(panel);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    for (const t of dirtyTurns) {
      if (t.pending) {
        t.textNode.appendData(t.pending);
        t.pending = "";
      }
    }
    dirtyTurns.clear();
    for (const panel of dirtyPanels) {
      if (panel.stick) {
        panel.body.scrollTop = panel.body.scrollHeight;
        panel.ourTop = panel.body.scrollTop;
      }
    }
    dirtyPanels.clear();
  }

  // ---- State ----------------------------------------------------------------------------------

  const turns = new Map(); // turn number -> turn record (see ensureTurn)
  const roundScores = new Map(); // round -> {aggressor, defender}
  let rounds = Number(config.rounds) || 0;
  let currentRound = 0;
  let lastSeq = 0;
  let terminal = false; // battle.completed or battle.failed seen: the log will not grow again
  let verdictShown = false;
  let es = null;
  let reconnectTimer = 0;
  let reconnectDelay = RECONNECT_DELAY_MS;
  // Replay mode (the admin's replay page), else null: see "Replay controls".
  const replay = config.replay ? { state: "playing", speed: initialSpeed() } : null;

  function setState(state) {
    els.status.dataset.state = state;
    els.status.textContent = STATE_TEXT[state];
  }

  function updateRoundCounter() {
    els.roundCounter.textContent = `Round ${currentRound} of ${rounds}`;
  }

  function formatScore(value) {
    if (value === null || value === undefined || value === "") return "–";
    const n = Number(value);
    if (!Number.isFinite(n)) return "–";
    return String(Math.round(n * 10) / 10);
  }

  function formatCost(cost) {
    if (cost === null || cost === undefined) return "cost unknown";
    const n = Number(cost);
    if (!Number.isFinite(n)) return "cost unknown";
    if (n === 0) return "cost $0.00";
    if (n > 0 && n < 0.0001) return "cost < $0.0001";
    return `cost $${n >= 1 ? n.toFixed(2) : n.toFixed(4)}`;
  }

  function formatDuration(ms) {
    const n = Number(ms);
    if (!Number.isFinite(n) || n < 0) return "duration unknown";
    if (n < 1000) return `${Math.round(n)} ms`;
    const seconds = n / 1000;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
  }

  function roleOf(value) {
    return ROLES.includes(value) ? value : null;
  }

  function setSpeaking(role) {
    for (const r of ROLES) panels[r].section.classList.toggle("speaking", r === role);
  }

  function stopSpeaking(role) {
    if (role && panels[role]) panels[role].section.classList.remove("speaking");
  }

  // ---- Turns ----------------------------------------------------------------------------------

  function ensureTurn(turnNo, role, round) {
    let t = turns.get(turnNo);
    if (t) return t;
    const panel = panels[role];
    if (!panel) return null;
    // Three turns a round (README, "How a battle runs"), for a turn first seen through a token.
    const r = Number(round) || Math.ceil(turnNo / ROLES.length);

    const article = document.createElement("article");
    article.className = "turn";
    article.dataset.turn = String(turnNo);
    article.dataset.round = String(r);
    const label = document.createElement("header");
    label.className = "turn-label";
    const roundEl = document.createElement("span");
    roundEl.className = "turn-round";
    roundEl.textContent = `Round ${r}`;
    label.append(roundEl);
    const textEl = document.createElement("div");
    textEl.className = "turn-text";
    const textNode = document.createTextNode("");
    textEl.append(textNode);
    article.append(label, textEl);

    // Keep turns in order even if an event ever arrives late.
    let before = null;
    for (const other of panel.body.querySelectorAll("article.turn")) {
      if (Number(other.dataset.turn) > turnNo) {
        before = other;
        break;
      }
    }
    panel.body.insertBefore(article, before);

    // cited: the line ranges of its verified quotes, once it has completed.
    t = { turnNo, role, round: r, panel, article, label, textEl, textNode, pending: "", completed: false, cited: null };
    turns.set(turnNo, t);
    schedule(panel);
    return t;
  }

  function addChip(t, className, text) {
    const chip = document.createElement("span");
    chip.className = `turn-chip ${className}`;
    chip.textContent = text;
    t.label.append(chip);
    return chip;
  }

  // ---- The document panel ---------------------------------------------------------------------
  //
  // The lines of config.documentUrl (split on "\n", numbered from 1: the numbers citations use), and
  // what the battle says about them, kept in `doc` and painted onto the line elements whenever it
  // changes, so that events applied before the text arrives lose nothing:
  //   cited:       line -> {aggressor, defender}, its verified quotes per side (a heat mark in the
  //                gutter; a line quoted by both sides is `contested`)
  //   flags:       the lines that address an AI rather than a reader (battle.started), marked ⚠
  //   highlighted: the lines of the citation last clicked

  const doc = {
    lines: [], // line elements, line n at index n - 1; empty until the text has loaded
    cited: new Map(),
    flags: new Set(),
    highlighted: [],
  };
  const phone = window.matchMedia(PHONE_QUERY);

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  function linesLabel(start, end) {
    return start === end ? `line ${start}` : `lines ${start}–${end}`;
  }

  // [start, end] when both are line numbers of a believable range, else null.
  function lineRange(start, end) {
    const s = Number(start);
    const e = Number(end);
    if (!Number.isInteger(s) || !Number.isInteger(e) || s < 1 || e < s || e - s >= MAX_CITED_LINES) return null;
    return [s, e];
  }

  function setDocumentExpanded(expanded) {
    // Only a phone folds the panel (arena.css); elsewhere the class changes nothing.
    els.docPanel.classList.toggle("folded", !expanded);
    els.docToggle.setAttribute("aria-expanded", String(expanded));
    els.docToggle.textContent = expanded ? "Hide the document" : "Show the document";
  }

  function documentExpanded() {
    return els.docToggle.getAttribute("aria-expanded") === "true";
  }

  function renderDocument(text) {
    const fragment = document.createDocumentFragment();
    doc.lines = text.split("\n").map((line, index) => {
      const n = index + 1;
      const item = document.createElement("li");
      item.className = "doc-line";
      item.id = `doc-line-${n}`;
      item.dataset.line = String(n);
      const gutter = document.createElement("span");
      gutter.className = "doc-gutter";
      const num = document.createElement("span");
      num.className = "doc-num";
      num.textContent = String(n);
      const heat = document.createElement("span");
      heat.className = "doc-heat";
      gutter.append(num, heat);
      const body = document.createElement("span");
      body.className = "doc-text";
      body.textContent = line;
      item.append(gutter, body);
      fragment.append(item);
      return item;
    });
    els.docLines.dataset.digits = String(String(doc.lines.length).length);
    els.docLines.replaceChildren(fragment);
    els.docLines.setAttribute("aria-busy", "false");
    els.docStatus.textContent = "";
    for (const n of markedLines()) paintLine(n);
  }

  async function loadDocument() {
    try {
      const response = await fetch(config.documentUrl, { headers: { Accept: "text/plain" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      renderDocument(await response.text());
    } catch (err) {
      console.warn("arena: the document could not be loaded", err);
      els.docStatus.textContent = "The document could not be loaded; reload the page to try again.";
      els.docLines.setAttribute("aria-busy", "false");
    }
  }

  function markedLines() {
    return new Set([...doc.cited.keys(), ...doc.flags, ...doc.highlighted]);
  }

  function paintLine(n) {
    const item = doc.lines[n - 1];
    if (!item) return;
    const counts = doc.cited.get(n) || { aggressor: 0, defender: 0 };
    const total = counts.aggressor + counts.defender;
    item.classList.toggle("cited-aggressor", counts.aggressor > 0);
    item.classList.toggle("cited-defender", counts.defender > 0);
    item.classList.toggle("contested", counts.aggressor > 0 && counts.defender > 0);
    const heat = item.querySelector(".doc-heat");
    if (total > 0) {
      item.dataset.heat = String(Math.min(total, HEAT_LEVELS));
      const by = SIDES.filter((side) => counts[side] > 0).map((side) => `${counts[side]}× by the ${SIDE_NAME[side]}`);
      heat.title = `Quoted ${by.join(", ")}${counts.aggressor && counts.defender ? ": contested" : ""}`;
    } else {
      delete item.dataset.heat;
      heat.removeAttribute("title");
    }

    const flagged = doc.flags.has(n);
    item.classList.toggle("flagged", flagged);
    let mark = item.querySelector(".doc-flag");
    if (flagged && !mark) {
      mark = document.createElement("span");
      mark.className = "doc-flag";
      mark.setAttribute("role", "img");
      mark.setAttribute("aria-label", FLAG_TITLE);
      mark.title = FLAG_TITLE;
      mark.textContent = "⚠";
      item.querySelector(".doc-gutter").append(mark);
    } else if (!flagged && mark) {
      mark.remove();
    }
    if (flagged) item.title = FLAG_TITLE;
    else item.removeAttribute("title");

    item.classList.toggle("highlighted", doc.highlighted.includes(n));
  }

  // Adds (sign 1) or takes back (sign -1) a turn's verified quotes in the per-line counts.
  function countCitations(side, ranges, sign) {
    if (!SIDES.includes(side)) return;
    for (const [start, end] of ranges) {
      for (let n = start; n <= end; n++) {
        const counts = doc.cited.get(n) || { aggressor: 0, defender: 0 };
        counts[side] = Math.max(0, counts[side] + sign);
        if (counts.aggressor || counts.defender) doc.cited.set(n, counts);
        else doc.cited.delete(n);
        paintLine(n);
      }
    }
  }

  function setFlags(flags) {
    const previous = [...doc.flags];
    doc.flags.clear();
    for (const flag of Array.isArray(flags) ? flags : []) {
      const n = Number(flag && flag.line);
      if (Number.isInteger(n) && n >= 1) doc.flags.add(n);
    }
    for (const n of new Set([...previous, ...doc.flags])) paintLine(n);
    const lines = [...doc.flags].sort((a, b) => a - b);
    const count = lines.length;
    els.docFlags.hidden = count === 0;
    els.docFlagsText.textContent = count
      ? `${plural(count, "line", "lines")} in this document ${count === 1 ? "looks" : "look"} like instructions to an AI; ${count === 1 ? "it is" : "they are"} treated as text.`
      : "";
    els.docFlagsLines.replaceChildren(
      ...lines.map((n) => {
        const link = document.createElement("a");
        link.className = "flag-link";
        link.href = `#doc-line-${n}`;
        link.dataset.startLine = String(n);
        link.dataset.endLine = String(n);
        link.textContent = `Line ${n}`;
        return link;
      }),
    );
  }

  // Highlights lines start..end (clearing the last highlight), unfolds the panel and scrolls it there.
  function showLines(start, end) {
    const before = doc.highlighted;
    doc.highlighted = [];
    for (let n = start; n <= end; n++) doc.highlighted.push(n);
    for (const n of new Set([...before, ...doc.highlighted])) paintLine(n);
    setDocumentExpanded(true);
    const first = doc.lines[start - 1];
    if (!first) {
      els.docStatus.textContent = doc.lines.length
        ? `The document has no ${linesLabel(start, end)}.`
        : "The document is still loading.";
      return;
    }
    const label = linesLabel(start, end);
    els.docStatus.textContent = `${label[0].toUpperCase()}${label.slice(1)} highlighted in the document.`;
    // The list scrolls (at once) so that the cited lines sit in its middle; the page then scrolls as
    // little as it must to show the list (shorter than the window: see arena.css), so the quote just
    // clicked stays in view when it can.
    const list = els.docLines;
    const last = doc.lines[Math.min(end, doc.lines.length) - 1];
    const height = last.offsetTop + last.offsetHeight - first.offsetTop;
    list.scrollTop = Math.max(0, first.offsetTop - Math.max(0, (list.clientHeight - height) / 2));
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    list.scrollIntoView({ block: "nearest", behavior: smooth ? "smooth" : "auto" });
  }

  function onLineLinkClick(e) {
    // A modified click (a new tab, say) is the browser's to handle.
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const link = e.target instanceof Element && e.target.closest("a.citation-verified, a.flag-link");
    if (!link) return;
    const range = lineRange(link.dataset.startLine, link.dataset.endLine);
    if (!range) return;
    e.preventDefault();
    showLines(range[0], range[1]);
  }

  // A completed turn's text: each cited quote found in it (in order, each searched for after the
  // last one found) becomes a link to its lines, or is marked as not found in the document.
  function renderTurnContent(t, content, citations) {
    const parts = [];
    let cursor = 0;
    for (const citation of citations) {
      if (!citation || typeof citation.quote !== "string" || !citation.quote) continue;
      const at = content.indexOf(citation.quote, cursor);
      if (at < 0) continue;
      if (at > cursor) parts.push(document.createTextNode(content.slice(cursor, at)));
      parts.push(citationElement(citation));
      cursor = at + citation.quote.length;
    }
    t.textNode = document.createTextNode(content.slice(cursor));
    parts.push(t.textNode);
    t.textEl.replaceChildren(...parts);
  }

  function citationElement(citation) {
    const range = citation.verified ? lineRange(citation.start_line, citation.end_line) : null;
    if (citation.verified && !range) return document.createTextNode(citation.quote);
    if (!range) {
      const span = document.createElement("span");
      span.className = "citation citation-unverified";
      span.title = "Not found in the document";
      span.textContent = citation.quote;
      return span;
    }
    const [start, end] = range;
    const link = document.createElement("a");
    link.className = "citation citation-verified";
    link.href = `#doc-line-${start}`;
    link.dataset.startLine = String(start);
    link.dataset.endLine = String(end);
    link.dataset.label = start === end ? `L${start}` : `L${start}–${end}`;
    link.title = `Show ${linesLabel(start, end)} in the document`;
    link.textContent = citation.quote;
    return link;
  }

  function verifiedRanges(citations) {
    const ranges = [];
    for (const citation of citations) {
      const range = citation && citation.verified ? lineRange(citation.start_line, citation.end_line) : null;
      if (range) ranges.push(range);
    }
    return ranges;
  }

  function resetDocument() {
    const marked = markedLines();
    doc.cited.clear();
    doc.highlighted = [];
    setFlags([]);
    for (const n of marked) paintLine(n);
    if (doc.lines.length) els.docStatus.textContent = "";
  }

  els.docToggle.addEventListener("click", () => setDocumentExpanded(!documentExpanded()));
  document.addEventListener("click", onLineLinkClick);
  setDocumentExpanded(!phone.matches);

  // ---- Jury and evidence ----------------------------------------------------------------------

  function scorePair(scores) {
    const s = scores && typeof scores === "object" ? scores : {};
    return `${formatScore(s.aggressor)} : ${formatScore(s.defender)}`;
  }

  function jurorItem(juror) {
    const item = document.createElement("li");
    const winner = String(juror.winner || "");
    item.className = `juror${WINNER_TEXT[winner] ? ` juror-${winner}` : ""}`;
    const model = document.createElement("span");
    model.className = "juror-model";
    model.textContent = typeof juror.model === "string" && juror.model ? juror.model : "A juror";
    const vote = document.createElement("span");
    vote.className = "juror-vote";
    vote.textContent = WINNER_TEXT[winner] || "No vote";
    const scores = document.createElement("span");
    scores.className = "juror-scores";
    scores.textContent = scorePair(juror.scores);
    scores.title = "Aggressor : Defender";
    const held = juror.consistent !== false;
    item.dataset.consistent = String(held);
    const consistency = document.createElement("span");
    consistency.className = "juror-consistency";
    if (juror.answered === false) consistency.textContent = "gave no verdict — counted as a draw";
    else if (held) consistency.textContent = "held when the sides were swapped";
    else consistency.textContent = "changed when the sides were swapped — counted as a draw";
    // Spaces between the parts, so that the item reads (and copies) as a sentence.
    item.append(model, " ", vote, " ", scores, " ", consistency);
    return item;
  }

  function showEvidence(evidence) {
    const items = [];
    for (const side of SIDES) {
      const e = evidence && typeof evidence === "object" ? evidence[side] : null;
      if (!e || typeof e !== "object") continue;
      const verified = Math.max(0, Math.floor(Number(e.verified) || 0));
      const unverified = Math.max(0, Math.floor(Number(e.unverified) || 0));
      const item = document.createElement("li");
      item.className = `evidence evidence-${side}`;
      const name = document.createElement("span");
      name.className = "evidence-side";
      name.textContent = `${SIDE_NAME[side]}:`;
      item.append(name, ` ${plural(verified, "quote", "quotes")} verified, ${unverified} not found`);
      items.push(item);
    }
    els.verdictEvidence.replaceChildren(...items);
    els.verdictEvidence.hidden = items.length === 0;
  }

  function showJury(data) {
    const jury = Array.isArray(data.jury) ? data.jury.filter((j) => j && typeof j === "object") : [];
    els.juryList.replaceChildren(...jury.map(jurorItem));
    const agreement = Number(data.agreement);
    if (jury.length && data.agreement !== null && Number.isFinite(agreement)) {
      const share = Math.min(1, Math.max(0, agreement));
      const agreeing = Math.round(share * jury.length);
      els.juryAgreement.textContent =
        `${agreeing} of ${plural(jury.length, "juror", "jurors")} agree with the verdict (${Math.round(share * 100)}%)`;
    } else {
      els.juryAgreement.textContent = "";
    }
    const moderator = data.moderator && typeof data.moderator === "object" ? data.moderator : null;
    if (moderator) {
      const ruling = WINNER_TEXT[String(moderator.winner || "")] || "no winner";
      const label = document.createElement("span");
      label.className = "verdict-moderator-label";
      label.textContent = "The Moderator ruled:";
      const value = document.createElement("strong");
      value.textContent = `${ruling}, ${scorePair(moderator.scores)}`;
      els.verdictModerator.replaceChildren(label, " ", value);
    } else {
      els.verdictModerator.textContent = "";
    }
    els.verdictModerator.hidden = !moderator;
    els.verdictJury.hidden = jury.length === 0 && !moderator;
  }

  // ---- Scores ---------------------------------------------------------------------------------

  function showScores(aggressor, defender, label) {
    els.scoreAggressor.textContent = formatScore(aggressor);
    els.scoreDefender.textContent = formatScore(defender);
    els.scoreLabel.textContent = label;
    const a = Number(aggressor);
    const d = Number(defender);
    const known = aggressor !== null && defender !== null && Number.isFinite(a) && Number.isFinite(d);
    els.scoreAggressor.parentElement.classList.toggle("leading", known && a > d);
    els.scoreDefender.parentElement.classList.toggle("leading", known && d > a);
  }

  function recordRoundScores(round, scores) {
    roundScores.set(round, scores);
    let item = els.roundScores.querySelector(`li[data-round="${round}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.round = String(round);
      let before = null;
      for (const other of els.roundScores.children) {
        if (Number(other.dataset.round) > round) {
          before = other;
          break;
        }
      }
      els.roundScores.insertBefore(item, before);
    }
    const name = document.createElement("span");
    name.className = "rs-round";
    name.textContent = `R${round}`;
    const agg = document.createElement("span");
    agg.className = "rs-aggressor";
    agg.textContent = formatScore(scores.aggressor);
    const sep = document.createElement("span");
    sep.className = "rs-sep";
    sep.textContent = ":";
    const def = document.createElement("span");
    def.className = "rs-defender";
    def.textContent = formatScore(scores.defender);
    item.replaceChildren(name, agg, sep, def);
    item.title = `Round ${round}: Aggressor ${agg.textContent}, Defender ${def.textContent}`;

    if (!verdictShown) {
      const latest = Math.max(...roundScores.keys());
      const s = roundScores.get(latest);
      showScores(s.aggressor, s.defender, `After round ${latest}`);
    }
  }

  // ---- Event handlers -------------------------------------------------------------------------

  const handlers = {
    "battle.started"(data) {
      if (Number(data.rounds) > 0) rounds = Number(data.rounds);
      updateRoundCounter();
      if (data.document && data.document.truncated) els.truncated.hidden = false;
      if (data.document && "flags" in data.document) setFlags(data.document.flags);
      for (const agent of data.agents || []) {
        const role = roleOf(agent.role);
        const el = role && document.querySelector(`[data-role-model="${role}"]`);
        if (el && agent.model) el.textContent = String(agent.model);
      }
    },

    "turn.started"(data) {
      const role = roleOf(data.role);
      if (!role) return;
      const round = Number(data.round) || 0;
      if (round > 0) {
        currentRound = round;
        updateRoundCounter();
      }
      setSpeaking(role);
      const t = ensureTurn(Number(data.turn), role, round);
      if (t && !t.completed) t.article.classList.add("running");
    },

    token(data) {
      const role = roleOf(data.role);
      if (!role || typeof data.text !== "string") return;
      const t = ensureTurn(Number(data.turn), role);
      if (!t || t.completed) return; // turn.completed's content is final
      t.pending += data.text;
      dirtyTurns.add(t);
      schedule(t.panel);
    },

    "turn.completed"(data) {
      const role = roleOf(data.role);
      if (!role) return;
      const t = ensureTurn(Number(data.turn), role, data.round);
      if (!t) return;
      // The content is authoritative: whatever the tokens said, the turn now reads exactly this.
      t.pending = "";
      dirtyTurns.delete(t);
      const content = typeof data.content === "string" ? data.content : "";
      const citations = Array.isArray(data.citations) ? data.citations : [];
      renderTurnContent(t, content, citations);
      // The lines this turn quotes count towards the heat marks (taken back first if it was seen).
      if (t.cited) countCitations(role, t.cited, -1);
      t.cited = verifiedRanges(citations);
      countCitations(role, t.cited, 1);
      t.completed = true;
      t.article.classList.remove("running");
      t.article.classList.add("completed");
      stopSpeaking(role);
      // After the last turn the verdict is asked for separately, which takes a moment: say so.
      if (role === "moderator" && rounds > 0 && t.round >= rounds && !verdictShown) els.verdictPending.hidden = false;
      if (data.scores && typeof data.scores === "object") {
        addChip(t, "turn-chip-scores", `A ${formatScore(data.scores.aggressor)} : D ${formatScore(data.scores.defender)}`);
        recordRoundScores(t.round, { aggressor: data.scores.aggressor, defender: data.scores.defender });
      }
      schedule(t.panel);
    },

    "turn.interrupted"(data) {
      // The turn was cut off (its server stopped) and starts again: its partial text goes.
      const t = turns.get(Number(data.turn));
      if (!t || t.completed) return;
      dirtyTurns.delete(t);
      t.article.remove();
      turns.delete(t.turnNo);
      stopSpeaking(t.role);
    },

    "jury.progress"(data) {
      if (verdictShown) return;
      const done = Math.max(0, Math.floor(Number(data.done) || 0));
      const total = Math.max(done, Math.floor(Number(data.total) || 0));
      els.verdictPendingText.textContent = `The jury is deliberating (${done} of ${total})`;
      if (data.juror && typeof data.juror === "object") {
        els.juryVotes.append(jurorItem(data.juror));
        els.juryVotes.hidden = false;
      }
      els.verdictPending.hidden = false;
    },

    verdict(data) {
      verdictShown = true;
      els.verdictPending.hidden = true;
      els.verdictEyebrow.textContent = data.source === "jury" ? "The jury's verdict" : "Verdict";
      showEvidence(data.evidence);
      showJury(data);
      const winner = String(data.winner || "");
      els.verdictWinner.textContent = WINNER_TEXT[winner] || "No winner";
      els.verdictSummary.textContent = typeof data.summary === "string" ? data.summary : "";
      els.verdictFallback.hidden = !data.fallback;
      for (const w of Object.keys(WINNER_TEXT)) els.verdict.classList.toggle(`verdict-${w}`, w === winner);
      els.verdict.hidden = false;
      const scores = data.scores || {};
      showScores(scores.aggressor ?? null, scores.defender ?? null, "Final");
      document.title = `${els.verdictWinner.textContent} · ${baseTitle}`;
    },

    "battle.completed"(data) {
      flush();
      const usage = data.usage || {};
      const prompt = Number(usage.prompt_tokens) || 0;
      const completion = Number(usage.completion_tokens) || 0;
      els.usage.textContent =
        `${prompt} prompt + ${completion} completion tokens · ${formatCost(data.cost_usd)} · ${formatDuration(data.duration_ms)}`;
      els.usage.hidden = false;
      setSpeaking(null);
      finish("finished");
    },

    "battle.failed"(data) {
      flush();
      els.verdictPending.hidden = true;
      for (const t of turns.values()) {
        if (!t.completed) {
          t.article.classList.remove("running");
          t.article.classList.add("interrupted");
          addChip(t, "turn-chip-interrupted", "interrupted");
        }
      }
      setSpeaking(null);
      els.errorMessage.textContent = typeof data.error === "string" && data.error ? data.error : "The battle failed.";
      els.failure.hidden = false;
      els.errorMessage.hidden = false;
      if (els.retryForm) els.retryForm.hidden = false;
      finish("failed");
    },
  };

  function onSpectators(e) {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    const count = Number(data.count);
    if (!Number.isFinite(count) || count < 0) return;
    els.spectators.textContent = `${Math.floor(count)} watching`;
    els.spectators.hidden = false;
  }

  // ---- Connection -----------------------------------------------------------------------------

  function finish(state) {
    terminal = true;
    setState(state);
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = 0;
    if (es) es.close();
    if (replay) setReplayState("ended");
  }

  function dispatch(source, type, e) {
    if (source !== es || terminal) return;
    // The browser keeps the last id for events sent without one, so only a fresh, higher id counts.
    if (/^\d+$/.test(e.lastEventId)) {
      const seq = Number(e.lastEventId);
      if (seq <= lastSeq) return;
      lastSeq = seq;
    }
    let data;
    try {
      data = JSON.parse(e.data);
    } catch (err) {
      console.warn(`arena: unreadable ${type} event`, err);
      return;
    }
    if (!data || typeof data !== "object") return;
    try {
      handlers[type](data);
    } catch (err) {
      console.error(`arena: failed to apply ${type} event`, err);
    }
  }

  function streamUrl() {
    const params = [];
    if (replay) params.push(`speed=${encodeURIComponent(replay.speed)}`);
    if (lastSeq > 0) params.push(`last_event_id=${encodeURIComponent(lastSeq)}`);
    if (!params.length) return config.eventsUrl;
    const sep = config.eventsUrl.includes("?") ? "&" : "?";
    return `${config.eventsUrl}${sep}${params.join("&")}`;
  }

  function retryLater() {
    if (reconnectTimer) return;
    reconnectTimer = setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_DELAY_MS);
  }

  // Closes the stream, if any, and any pending reconnection: nothing more arrives until connect().
  function disconnect() {
    if (reconnectTimer) clearTimeout(reconnectTimer);
    reconnectTimer = 0;
    if (es) es.close();
    es = null;
  }

  function connect() {
    reconnectTimer = 0;
    if (terminal) return;
    const source = new EventSource(streamUrl());
    es = source;
    source.onopen = () => {
      if (source !== es || terminal) return;
      reconnectDelay = RECONNECT_DELAY_MS;
      setState(replay ? "playing" : "live");
    };
    source.onerror = () => {
      if (source !== es || terminal) return;
      setState("reconnecting");
      if (replay) {
        // Reopen it ourselves, from lastSeq and at the speed chosen now (the browser would reuse
        // the URL it was opened with).
        source.close();
        retryLater();
        return;
      }
      // CONNECTING: the browser retries by itself and sends Last-Event-ID. CLOSED: it gave up.
      if (source.readyState === EventSource.CLOSED) retryLater();
    };
    for (const type of Object.keys(handlers)) {
      source.addEventListener(type, (e) => dispatch(source, type, e));
    }
    source.addEventListener("spectators", (e) => {
      if (source === es) onSpectators(e);
    });
  }

  // ---- Share link -----------------------------------------------------------------------------

  let copyStatusTimer = 0;
  function copyFeedback(text) {
    els.copyStatus.textContent = text;
    clearTimeout(copyStatusTimer);
    copyStatusTimer = setTimeout(() => {
      els.copyStatus.textContent = "";
    }, 4000);
  }

  if (els.share && els.copy) {
    els.share.addEventListener("focus", () => els.share.select());
    els.copy.addEventListener("click", copyShareLink);
  }

  async function copyShareLink() {
    const text = els.share.value;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copyFeedback("Link copied.");
        return;
      } catch {
        // Permission refused: fall back to selecting the text.
      }
    }
    els.share.focus();
    els.share.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch {
      copied = false;
    }
    copyFeedback(copied ? "Link copied." : "Link selected: press Ctrl+C (⌘C) to copy it.");
  }

  // ---- Replay controls ------------------------------------------------------------------------
  //
  // The server paces a replay (the original timing divided by the speed), so the page only opens
  // and closes the stream. A small state machine:
  //   playing: a stream is open, opening or about to reopen (Play disabled)
  //   paused:  no stream; Play reopens it from lastSeq (Pause disabled)
  //   ended:   battle.completed or battle.failed was applied; only Restart plays again
  // The connection status shows connecting / playing / reconnecting / paused / finished / failed.

  function initialSpeed() {
    if (els.speed && els.speed.value !== "") return els.speed.value;
    const speed = Number(config.replay.speed);
    return Number.isFinite(speed) && speed >= 0 ? String(speed) : "1";
  }

  function setReplayState(state) {
    const focused = document.activeElement;
    replay.state = state;
    if (els.play) els.play.disabled = state !== "paused";
    if (els.pause) els.pause.disabled = state !== "playing";
    document.body.classList.toggle("replay-paused", state === "paused");
    // A button that was just disabled drops the keyboard focus: hand it to the next usable one.
    if (focused && focused.disabled) {
      const next = [els.play, els.pause, els.restart].find((b) => b && !b.disabled);
      if (next) next.focus();
    }
  }

  function startPlaying() {
    setReplayState("playing");
    reconnectDelay = RECONNECT_DELAY_MS;
    setState("connecting");
    connect();
  }

  function play() {
    if (replay.state === "paused") startPlaying();
  }

  function pause() {
    if (replay.state !== "playing") return;
    disconnect();
    setReplayState("paused");
    setState("paused");
  }

  function changeSpeed() {
    replay.speed = els.speed.value;
    if (replay.state !== "playing") return; // used by the next Play or Restart
    disconnect();
    startPlaying();
  }

  function restart() {
    disconnect();
    resetView();
    startPlaying();
  }

  // Back to the page as served: no turns, scores, verdict, failure or usage, nothing applied.
  function resetView() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    dirtyTurns.clear();
    dirtyPanels.clear();
    for (const panel of Object.values(panels)) {
      panel.body.replaceChildren();
      panel.stick = true;
      panel.ourTop = -1;
      panel.section.classList.remove("speaking");
    }
    turns.clear();
    roundScores.clear();
    els.roundScores.replaceChildren();
    verdictShown = false;
    showScores(null, null, "No scores yet");
    els.verdict.hidden = true;
    els.verdictPending.hidden = true;
    els.verdictPendingText.textContent = PENDING_TEXT;
    els.juryVotes.replaceChildren();
    els.juryVotes.hidden = true;
    els.verdictEyebrow.textContent = "Verdict";
    showEvidence(null);
    showJury({});
    resetDocument();
    for (const w of Object.keys(WINNER_TEXT)) els.verdict.classList.remove(`verdict-${w}`);
    els.verdictWinner.textContent = "";
    els.verdictSummary.textContent = "";
    els.verdictFallback.hidden = true;
    els.failure.hidden = true;
    els.errorMessage.hidden = true;
    els.errorMessage.textContent = "";
    if (els.retryForm) els.retryForm.hidden = true;
    els.usage.hidden = true;
    els.usage.textContent = "";
    els.truncated.hidden = true;
    els.spectators.hidden = true;
    document.title = baseTitle;
    rounds = Number(config.rounds) || 0;
    currentRound = 0;
    updateRoundCounter();
    lastSeq = 0;
    terminal = false;
  }

  if (replay) {
    if (els.play) els.play.addEventListener("click", play);
    if (els.pause) els.pause.addEventListener("click", pause);
    if (els.speed) els.speed.addEventListener("change", changeSpeed);
    if (els.restart) els.restart.addEventListener("click", restart);
  }

  // ---- Start ----------------------------------------------------------------------------------

  updateRoundCounter();
  setState("connecting");
  if (replay) setReplayState("playing");
  loadDocument();
  connect();
})();
