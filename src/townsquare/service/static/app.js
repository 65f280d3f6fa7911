// townsquare web page: chat with streamed, cited answers, live source status, trends.
//
// Plain JS, no dependencies, no build step. The Content-Security-Policy forbids
// inline code and remote content, so everything the page shows is built here as
// DOM nodes; text from posts, answers and errors is only ever set through
// textContent (never innerHTML), so markup in a post stays text.
"use strict";

(() => {
  const KEY_STORE = "townsquare.key";
  const MODE_STORE = "townsquare.mode";
  const MODELS = ["townsquare", "townsquare-fun"];
  const LIVE_EVERY_MS = 3000;
  const TRENDS_EVERY_MS = 30000;
  const AGES_EVERY_MS = 15000;
  const STATUSES = ["running", "connecting", "unreachable", "failed", "stopped"];
  // [3] or [1, 2]: citation markers the answer backend writes.
  const MARKER_RE = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

  const state = {
    key: null,
    conversationId: null,
    history: [],
    busy: false,
    abort: null,
    answers: 0,
    liveTimer: 0,
    trendsTimer: 0,
    trendsGone: false,
    pollGen: 0,
    // Bumped by "New conversation": a stream still finishing belongs to the old one.
    epoch: 0,
  };

  const $ = (id) => document.getElementById(id);

  /** An element with a class and children (strings become text nodes). */
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // --- storage (may be disabled: then the key lives for this page only) ------

  function stored(name) {
    try {
      return window.localStorage.getItem(name);
    } catch (_) {
      return null;
    }
  }

  function store(name, value) {
    try {
      if (value === null) window.localStorage.removeItem(name);
      else window.localStorage.setItem(name, value);
    } catch (_) {
      /* private mode: keep it in memory only */
    }
  }

  // --- formatting --------------------------------------------------------------

  /** Seconds as the short age people read at a glance: 12s, 5m, 3h, 2d. */
  function shortAge(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h";
    if (s < 86400 * 365) return Math.floor(s / 86400) + "d";
    return Math.floor(s / (86400 * 365)) + "y";
  }

  /** A <time> showing the age of an ISO timestamp, refreshed while the page is open. */
  function timeNode(iso) {
    const node = el("time", "age");
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return node;
    node.dateTime = new Date(t).toISOString();
    node.dataset.ts = String(t);
    node.title = new Date(t).toLocaleString();
    node.textContent = shortAge((Date.now() - t) / 1000);
    return node;
  }

  function refreshAges() {
    for (const node of document.querySelectorAll("time[data-ts]")) {
      node.textContent = shortAge((Date.now() - Number(node.dataset.ts)) / 1000);
    }
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function rate(perSecond) {
    if (!Number.isFinite(perSecond)) return "–";
    return (perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(1)) + "/s";
  }

  /** The URL if it is http(s), else null: other schemes (javascript:, data:) are never linked. */
  function safeUrl(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function handle(author, source) {
    const a = String(author || "unknown");
    if (a.startsWith("@") || /\s/.test(a) || source === "rss") return a;
    return "@" + a;
  }

  // --- the API key -------------------------------------------------------------

  /** Take ``#key=...`` from the address, keep it, and remove it from the address bar. */
  function keyFromFragment() {
    const fragment = window.location.hash.replace(/^#/, "");
    if (!fragment) return null;
    const params = new URLSearchParams(fragment);
    const key = params.get("key");
    if (key === null) return null;
    params.delete("key");
    const rest = params.toString();
    const url = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
    window.history.replaceState(null, "", url);
    return key.trim() || null;
  }

  function setKey(key) {
    state.key = key;
    store(KEY_STORE, key);
    if (key) {
      $("keyform").hidden = true;
      startPolling();
    }
  }

  function askForKey(message) {
    const form = $("keyform");
    if (message) $("key-message").textContent = message;
    liveDown("waiting for an API key");
    form.hidden = false;
    $("key-input").focus();
  }

  function keyRefused(message) {
    setKey(null);
    stopPolling();
    askForKey(
      "The server refused this API key" + (message ? " (" + message + ")" : "") +
        ". Enter a valid key to continue."
    );
  }

  // --- talking to the API ------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, message, code, retryAfter) {
      super(message);
      this.status = status;
      this.code = code || null;
      this.retryAfter = retryAfter || null;
    }
  }

  function api(path, init) {
    const options = Object.assign({ cache: "no-store", credentials: "omit" }, init || {});
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", "Bearer " + state.key);
    options.headers = headers;
    return fetch(path, options);
  }

  /** The OpenAI-shaped error of a failed response, whatever its body. */
  async function failureOf(resp) {
    let message = "The server answered " + resp.status + " " + (resp.statusText || "");
    let code = null;
    try {
      const body = await resp.json();
      if (body && body.error && typeof body.error.message === "string") {
        message = body.error.message;
        code = body.error.code;
      }
    } catch (_) {
      /* not JSON: keep the status line */
    }
    return new ApiFailure(resp.status, message, code, resp.headers.get("Retry-After"));
  }

  function describe(err) {
    if (err instanceof ApiFailure) {
      // Say when to retry, unless the server's message already does.
      const wait = err.retryAfter && !/try again/i.test(err.message)
        ? " Try again in " + err.retryAfter + " s."
        : "";
      if (err.status === 429) return "Too many requests: " + err.message + wait;
      if (err.status === 503) return err.message + wait;
      return err.message;
    }
    if (err && err.name === "AbortError") return "Stopped.";
    if (err instanceof TypeError) {
      return "Couldn't reach the server (" + err.message + "). Is townsquare serve running?";
    }
    if (err instanceof SyntaxError) return "The server sent an answer this page can't read.";
    return String(err && err.message ? err.message : err);
  }

  // --- the transcript ----------------------------------------------------------

  function transcript() {
    return $("transcript");
  }

  function nearBottom() {
    const doc = document.documentElement;
    return window.innerHeight + window.scrollY >= doc.scrollHeight - 120;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  function addUserMessage(text) {
    $("empty").hidden = true;
    const li = el("li", "message user", el("p", "bubble", text));
    li.setAttribute("aria-label", "You");
    transcript().append(li);
    keepScrolled(true);
  }

  function addAnswer(model) {
    state.answers += 1;
    const answer = {
      id: "a" + state.answers,
      text: "",
      citations: [],
      degraded: null,
      updates: 0,
      li: el("li", "message assistant"),
      body: el("p", "bubble answer"),
      cards: el("ol", "citations"),
      status: el("p", "answer-status"),
    };
    answer.li.setAttribute("aria-label", "Answer");
    answer.body.setAttribute("aria-busy", "true");
    answer.body.dataset.updates = "0";
    answer.status.textContent = "Searching live posts…";
    if (model === "townsquare-fun") answer.li.classList.add("fun");
    answer.cards.setAttribute("aria-label", "Sources");
    answer.li.append(answer.body, answer.status, answer.cards);
    transcript().append(answer.li);
    keepScrolled(true);
    return answer;
  }

  function cardId(answer, n) {
    return "cite-" + answer.id + "-" + n;
  }

  /** Answer text as text nodes, with [n] markers linking to the matching card. */
  function renderAnswer(answer) {
    const wasNearBottom = nearBottom();
    const known = new Set(answer.citations.map((c) => String(c.n)));
    const streaming = answer.body.getAttribute("aria-busy") === "true";
    const nodes = [];
    let last = 0;
    for (const m of answer.text.matchAll(MARKER_RE)) {
      const numbers = m[1].split(",").map((s) => s.trim());
      // While streaming the cards are not there yet: link every marker; after,
      // only those with a card (the rest stay plain text).
      if (!streaming && !numbers.some((n) => known.has(n))) continue;
      nodes.push(document.createTextNode(answer.text.slice(last, m.index)));
      nodes.push(document.createTextNode("["));
      numbers.forEach((n, i) => {
        if (i) nodes.push(document.createTextNode(", "));
        if (streaming || known.has(n)) {
          const a = el("a", "cite-ref", n);
          a.href = "#" + cardId(answer, n);
          a.dataset.card = cardId(answer, n);
          a.setAttribute("aria-label", "Source " + n);
          nodes.push(a);
        } else {
          nodes.push(document.createTextNode(n));
        }
      });
      nodes.push(document.createTextNode("]"));
      last = m.index + m[0].length;
    }
    nodes.push(document.createTextNode(answer.text.slice(last)));
    answer.body.replaceChildren(...nodes);
    answer.updates += 1;
    answer.body.dataset.updates = String(answer.updates);
    keepScrolled(wasNearBottom);
  }

  function citationCard(answer, c) {
    const li = el("li", "card");
    li.id = cardId(answer, c.n);
    li.tabIndex = -1;
    const who = el("span", "who");
    if (c.author_name) who.append(el("span", "name", String(c.author_name)));
    who.append(el("span", "handle", handle(c.author, c.source)));
    const meta = el("span", "card-meta");
    if (c.source) meta.append(el("span", "origin", String(c.source)));
    meta.append(timeNode(c.created_at));
    const head = el("div", "card-head", el("span", "num", String(c.n)), who, meta);
    li.append(head, el("p", "card-text", String(c.text || "")));
    const url = safeUrl(c.url);
    if (url) {
      const link = el("a", "card-link", "Open post");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.referrerPolicy = "no-referrer";
      link.setAttribute("aria-label", "Open post by " + handle(c.author, c.source));
      li.append(link);
    }
    return li;
  }

  function finishAnswer(answer, error) {
    answer.body.setAttribute("aria-busy", "false");
    if (answer.text) renderAnswer(answer);
    answer.cards.replaceChildren(...answer.citations.map((c) => citationCard(answer, c)));
    if (error) {
      answer.status.textContent = describe(error);
      answer.status.className = "answer-status error";
      answer.status.setAttribute("role", "alert");
      if (!answer.text) answer.body.hidden = true;
    } else if (!answer.text) {
      answer.status.textContent = "The answer was empty.";
    } else {
      const n = answer.citations.length;
      if (!n) {
        answer.status.textContent = "No sources cited.";
      } else if (answer.citations.every((c) => c.cited === false)) {
        // The model cited nothing: these are the posts it was given, not its sources.
        answer.status.textContent = "The answer cites no post; it was given these " + n + ":";
        answer.cards.classList.add("uncited");
      } else {
        answer.status.textContent = plural(n, "source");
      }
      if (answer.degraded) {
        // The model was unavailable: the server answered with the matching posts alone.
        const retry = Number(answer.degraded.retryAfter);
        answer.status.textContent = "Search-only answer: the answer model is unavailable" +
          (retry > 0 ? "; try again in " + Math.ceil(retry) + " s." : ".");
        answer.status.classList.add("degraded");
      }
    }
  }

  // --- streaming a chat completion ---------------------------------------------

  /** Server-sent events from a fetch() body: calls onData with each event's data. */
  async function readEvents(body, onData) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    const line = (raw) => {
      const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (text === "") {
        if (data.length) onData(data.join("\n"));
        data = [];
        return;
      }
      if (text.startsWith(":")) return; // comment / keep-alive
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          line(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 1);
        }
      }
      buffer += decoder.decode();
      if (buffer) line(buffer);
      line("");
    } catch (err) {
      reader.cancel().catch(() => {});
      throw err;
    }
  }

  async function ask(question) {
    if (!state.key) {
      askForKey();
      return;
    }
    const model = currentModel();
    const epoch = state.epoch;
    state.busy = true;
    $("send").disabled = true;
    addUserMessage(question);
    const answer = addAnswer(model);
    const message = { role: "user", content: question };
    state.history.push(message);
    // With a conversation id the server holds the history: send only the new turn.
    const payload = {
      model: model,
      stream: true,
      messages: state.conversationId ? [message] : state.history.slice(),
    };
    if (state.conversationId) payload.conversation_id = state.conversationId;
    const controller = new AbortController();
    state.abort = controller;
    let finished = false;
    let error = null;
    try {
      const resp = await api("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
      if (!resp.ok) throw await failureOf(resp);
      answer.status.textContent = "Answering…";
      await readEvents(resp.body, (data) => {
        if (data === "[DONE]") {
          finished = true;
          return;
        }
        const chunk = JSON.parse(data);
        if (chunk.error) {
          throw new ApiFailure(500, String(chunk.error.message || "The answer failed"),
            chunk.error.code);
        }
        const choice = chunk.choices && chunk.choices[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (typeof piece === "string" && piece) {
          answer.text += piece;
          renderAnswer(answer);
        }
        if (Array.isArray(chunk.citations)) answer.citations = chunk.citations;
        if (chunk.degraded === true) answer.degraded = { retryAfter: chunk.retry_after };
        if (typeof chunk.conversation_id === "string" && epoch === state.epoch) {
          state.conversationId = chunk.conversation_id;
        }
      });
      if (!finished) {
        throw new Error(answer.text ? "The answer was cut off." : "The answer stream ended early.");
      }
    } catch (err) {
      error = err;
      if (err instanceof ApiFailure && err.status === 401) keyRefused(err.message);
    } finally {
      if (state.abort === controller) state.abort = null;
      if (answer.text && epoch === state.epoch) {
        state.history.push({ role: "assistant", content: answer.text });
      }
      finishAnswer(answer, error);
      state.busy = false;
      $("send").disabled = false;
    }
  }

  function currentModel() {
    const checked = document.querySelector('input[name="mode"]:checked');
    return checked && MODELS.includes(checked.value) ? checked.value : MODELS[0];
  }

  function newConversation() {
    state.epoch += 1;
    if (state.abort) state.abort.abort();
    state.conversationId = null;
    state.history = [];
    transcript().replaceChildren();
    $("empty").hidden = false;
    $("question").focus();
  }

  // --- live indicator ------------------------------------------------------------

  function newest(age) {
    return age === null || age === undefined ? "no posts yet" : "newest " + shortAge(age);
  }

  function renderLive(data) {
    const sources = Array.isArray(data.sources) ? data.sources : [];
    const total = Number(data.posts_total);
    $("live-total").textContent = Number.isFinite(total)
      ? total.toLocaleString() + " posts"
      : "live";
    $("live-total").className = "live-total";
    const items = sources.map((s) => {
      const status = STATUSES.includes(s.status) ? s.status : "unknown";
      const li = el("li", "source status-" + status);
      li.append(
        el("span", "dot"),
        el("span", "source-name", String(s.name || s.kind || "source")),
        el("span", "source-rate", rate(Number(s.posts_per_s))),
        el("span", "source-age", newest(s.newest_post_age_s))
      );
      const lines = [String(s.name) + ": " + status];
      if (s.lag_s !== null && s.lag_s !== undefined) lines.push("lag " + shortAge(s.lag_s));
      if (s.last_error) lines.push(String(s.last_error));
      li.title = lines.join("\n");
      li.setAttribute("aria-label", lines.join(", ") + ", " + rate(Number(s.posts_per_s)) +
        ", " + newest(s.newest_post_age_s));
      return li;
    });
    if (!items.length) items.push(el("li", "source status-stopped", "no live sources"));
    $("live-sources").replaceChildren(...items);

    const down = sources.filter((s) => s.status === "unreachable" || s.status === "failed");
    const banner = $("banner");
    if (down.length) {
      const names = down.map((s) => String(s.name)).join(", ");
      const what = down.some((s) => s.status === "unreachable")
        ? "Network unreachable"
        : "Source failed";
      banner.textContent = what + " for " + names + ": retrying. Answers use the " +
        (Number.isFinite(total) ? total.toLocaleString() + " " : "") + "posts already stored.";
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function liveDown(message) {
    $("live-total").textContent = message;
    $("live-total").className = "live-total down";
  }

  async function pollLive(gen) {
    state.liveTimer = 0;
    if (!state.key || gen !== state.pollGen || document.hidden) return;
    let delay = LIVE_EVERY_MS;
    try {
      const resp = await api("/v1/live");
      if (resp.status === 401) {
        keyRefused((await failureOf(resp)).message);
        return;
      }
      if (resp.status === 429) {
        // This key's request budget is spent: wait as long as the server asks.
        const retry = Number(resp.headers.get("Retry-After")) || 10;
        delay = Math.max(delay, retry * 1000);
        liveDown("live status paused: rate limited for " + retry + " s");
      } else if (!resp.ok) {
        liveDown("live status unavailable");
      } else {
        renderLive(await resp.json());
      }
    } catch (_) {
      liveDown("server unreachable");
    }
    if (state.key && gen === state.pollGen) {
      state.liveTimer = window.setTimeout(pollLive, delay, gen);
    }
  }

  // --- trending panel ------------------------------------------------------------

  async function getData(path) {
    const resp = await api(path);
    if (resp.status === 404) return null; // not offered by this server
    if (!resp.ok) throw await failureOf(resp);
    const body = await resp.json();
    return Array.isArray(body.data) ? body.data : [];
  }

  function trendItem(t) {
    const label = String(t.label || t.feature || "");
    const button = el("button", "trend", el("span", "trend-label", label));
    button.type = "button";
    const posts = Number(t.posts !== undefined ? t.posts : t.count);
    const authors = Number(t.authors);
    const meta = [];
    if (Number.isFinite(posts)) meta.push(plural(posts, "post"));
    if (Number.isFinite(authors)) meta.push(plural(authors, "author"));
    button.append(el("span", "trend-meta", meta.join(" · ")));
    button.setAttribute("aria-label", "Ask about " + label);
    button.addEventListener("click", () => submitQuestion("What are people saying about " +
      label + "?"));
    return el("li", null, button);
  }

  function storyItem(s) {
    const li = el("li", "story", el("h3", "story-title", String(s.title || "")));
    const meta = el("p", "story-meta");
    meta.append(plural(Number(s.size) || 0, "post") + " · " +
      plural(Number(s.authors) || 0, "author") + " · ");
    meta.append(timeNode(s.last_seen));
    li.append(meta);
    if (s.summary) {
      li.append(el("p", "story-summary", String(s.summary)));
      // The summary's [n] markers, as links to the posts they cite.
      const cites = Array.isArray(s.citations) ? s.citations : [];
      if (cites.length) {
        const list = el("ol", "story-sources");
        for (const c of cites) {
          const who = handle(c.author, c.source);
          const text = String(c.text || "").replace(/\s+/g, " ").slice(0, 120);
          const href = safeUrl(c.url);
          const label = "[" + Number(c.n) + "] " + who;
          const head = href ? el("a", null, label) : el("span", null, label);
          if (href) {
            head.href = href;
            head.target = "_blank";
            head.rel = "noopener noreferrer";
          }
          list.append(el("li", null, head, el("span", "story-source-text", " " + text)));
        }
        li.append(list);
      }
    }
    return li;
  }

  async function pollTrends(gen) {
    state.trendsTimer = 0;
    if (!state.key || state.trendsGone || gen !== state.pollGen || document.hidden) return;
    let delay = TRENDS_EVERY_MS;
    try {
      const [trends, stories] = await Promise.all([
        getData("/v1/trends?window=1h"),
        getData("/v1/stories?mode=" + (currentModel() === "townsquare-fun" ? "fun" : "regular")),
      ]);
      if (trends === null && stories === null) {
        state.trendsGone = true; // this server has no trends: hide the panel for good
        $("trending").hidden = true;
        return;
      }
      const t = (trends || []).slice(0, 10);
      const s = (stories || []).slice(0, 5);
      $("trends").replaceChildren(...t.map(trendItem));
      $("stories").replaceChildren(...s.map(storyItem));
      $("stories-title").hidden = !s.length;
      $("trending").hidden = !t.length && !s.length;
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 401) {
        keyRefused(err.message);
        return;
      }
      // Keep what is shown. 503 while trends warm up, 429: come back when the server says.
      const retry = err instanceof ApiFailure ? Number(err.retryAfter) : NaN;
      if (Number.isFinite(retry) && retry > 0) delay = Math.max(2, retry) * 1000;
    }
    if (state.key && gen === state.pollGen) {
      state.trendsTimer = window.setTimeout(pollTrends, delay, gen);
    }
  }

  function startPolling() {
    stopPolling();
    pollLive(state.pollGen);
    pollTrends(state.pollGen);
  }

  /** Stop both polls; a poll still in flight sees the new generation and stops too. */
  function stopPolling() {
    state.pollGen += 1;
    window.clearTimeout(state.liveTimer);
    window.clearTimeout(state.trendsTimer);
    state.liveTimer = 0;
    state.trendsTimer = 0;
  }

  // --- wiring ----------------------------------------------------------------------

  function submitQuestion(text) {
    const question = text.trim();
    if (!question || state.busy) return;
    if (!state.key) {
      askForKey(); // keep the question in the box until there is a key
      return;
    }
    $("question").value = "";
    ask(question);
  }

  function init() {
    const mode = stored(MODE_STORE);
    if (mode === "townsquare-fun") $("mode-fun").checked = true;
    document.body.classList.toggle("fun", currentModel() === "townsquare-fun");
    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.addEventListener("change", () => {
        store(MODE_STORE, currentModel());
        document.body.classList.toggle("fun", currentModel() === "townsquare-fun");
      });
    }

    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      submitQuestion($("question").value);
    });
    $("question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submitQuestion($("question").value);
      }
    });
    $("new-conversation").addEventListener("click", newConversation);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      $("key-input").value = "";
      setKey(key);
    });
    // [n] markers: scroll to the card and highlight it.
    transcript().addEventListener("click", (event) => {
      const link = event.target.closest && event.target.closest("a.cite-ref");
      if (!link) return;
      event.preventDefault();
      const card = document.getElementById(link.dataset.card);
      if (!card) return;
      card.scrollIntoView({ behavior: "smooth", block: "nearest" });
      card.classList.remove("flash");
      void card.offsetWidth; // restart the highlight animation
      card.classList.add("flash");
      card.focus({ preventScroll: true });
    });
    window.setInterval(refreshAges, AGES_EVERY_MS);
    // No polling while the tab is hidden (it spends the key's request budget); catch up
    // as soon as it is visible again.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.key) startPolling();
    });

    const key = keyFromFragment() || stored(KEY_STORE);
    if (key) setKey(key);
    else askForKey();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
