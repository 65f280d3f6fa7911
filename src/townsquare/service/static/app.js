// townsquare web page: what is happening now (live feed, search, stories) and chat with
// streamed, cited answers, kept per key as conversations.
//
// Plain JS, no dependencies, no build step. The Content-Security-Policy forbids
// inline code and remote content, so everything the page shows is built here as
// DOM nodes; text from posts, answers and errors is only ever set through
// textContent (never innerHTML), so markup in a post stays text.
"use strict";

(() => {
  const KEY_STORE = "townsquare.key";
  const MODE_STORE = "townsquare.mode";
  const CONV_STORE = "townsquare.conversation";
  const FEED_MAX = 100;
  const FEED_RETRY_MS = 2000;
  const PAUSED_MAX = 500;
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
    view: "now",
    feed: { abort: null, gen: 0, paused: false, held: [], retry: 0 },
    sources: new Set(),
    langs: new Set(),
    conversations: [],
    deleteArmed: 0,
    storiesSeen: false,
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
    node.title = new Date(t).toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
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

  /** A link that opens a post's own page: a new tab, no opener, no referrer. */
  function externalLink(href, cls, label) {
    const link = el("a", cls, label);
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.referrerPolicy = "no-referrer";
    return link;
  }

  /** Display name (if known) and handle: never a bare account id when a handle exists. */
  function authorNode(p) {
    const who = el("span", "who");
    const name = p.author_name ? String(p.author_name) : "";
    if (name && name !== p.author) who.append(el("span", "name", name));
    who.append(el("span", "handle", handle(p.author, p.source)));
    if (p.author_id && p.author_id !== p.author) who.title = String(p.author_id);
    return who;
  }

  const ENGAGEMENT = [
    ["replies", ["reply_count", "replies"], "reply", "replies"],
    ["reposts", ["repost_count", "reposts", "reblogs_count", "boosts"], "repost", "reposts"],
    ["likes", ["like_count", "likes", "favourites_count"], "like", "likes"],
    ["quotes", ["quote_count", "quotes"], "quote", "quotes"],
  ];

  /** "3 replies · 12 likes" from whichever engagement fields the post has (none: null). */
  function engagementText(p) {
    const nested = p.engagement && typeof p.engagement === "object" ? p.engagement : {};
    const parts = [];
    for (const [key, names, one, many] of ENGAGEMENT) {
      let n = Number(nested[key]);
      for (const name of names) {
        if (!Number.isFinite(n) && p[name] !== undefined && p[name] !== null) n = Number(p[name]);
      }
      if (Number.isFinite(n)) parts.push(n.toLocaleString() + " " + (n === 1 ? one : many));
    }
    return parts.length ? parts.join(" · ") : null;
  }

  /** Text as nodes, each occurrence of a search term wrapped in <mark>. */
  function highlighted(text, terms) {
    const words = (terms || []).filter((t) => t.length > 1)
      .map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    if (!words.length) return [document.createTextNode(text)];
    const re = new RegExp("(" + words.join("|") + ")", "giu");
    const nodes = [];
    let last = 0;
    for (const m of text.matchAll(re)) {
      if (m.index > last) nodes.push(document.createTextNode(text.slice(last, m.index)));
      nodes.push(el("mark", null, m[0]));
      last = m.index + m[0].length;
    }
    if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
    return nodes;
  }

  /** A post as the feed, search results and stories show it. */
  function postCard(p, terms) {
    const li = el("li", "post");
    li.dataset.id = String(p.id || "");
    if (p.source) li.dataset.source = String(p.source);
    if (p.lang) li.dataset.lang = String(p.lang);
    const meta = el("span", "card-meta");
    if (p.source) meta.append(el("span", "origin", String(p.source)));
    if (p.lang) meta.append(el("span", "origin lang", String(p.lang)));
    meta.append(timeNode(p.created_at));
    li.append(el("div", "card-head", authorNode(p), meta));
    const text = el("p", "post-text");
    text.append(...highlighted(String(p.text || ""), terms));
    li.append(text);
    const foot = el("div", "post-foot");
    const counts = engagementText(p);
    if (counts) foot.append(el("span", "engagement", counts));
    const url = safeUrl(p.url);
    if (url) foot.append(externalLink(url, "card-link", "Open post"));
    const explain = el("button", "link explain", "Explain this post");
    explain.type = "button";
    explain.addEventListener("click", () => askAbout(explainQuestion(p)));
    foot.append(explain);
    li.append(foot);
    return li;
  }

  function explainQuestion(p) {
    const text = String(p.text || "").replace(/\s+/g, " ").trim();
    const short = text.length > 280 ? text.slice(0, 279) + "…" : text;
    return "Explain this post by " + handle(p.author, p.source) + " and what people say " +
      "about it: \"" + short + "\"";
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
      loadConversations();
      // Back where the last visit was: its conversation, if it still exists.
      const last = stored(CONV_STORE);
      if (last && !state.conversationId) openConversation(last);
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
    const who = authorNode(c);
    const meta = el("span", "card-meta");
    if (c.source) meta.append(el("span", "origin", String(c.source)));
    meta.append(timeNode(c.created_at));
    const head = el("div", "card-head", el("span", "num", String(c.n)), who, meta);
    li.append(head, el("p", "card-text", String(c.text || "")));
    const url = safeUrl(c.url);
    if (url) {
      const link = externalLink(url, "card-link", "Open post");
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
    let name = "message";
    const line = (raw) => {
      const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (text === "") {
        if (data.length) onData(data.join("\n"), name);
        data = [];
        name = "message";
        return;
      }
      if (text.startsWith(":")) return; // comment / keep-alive
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") name = value;
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
    showView("chat");
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
          setConversation(chunk.conversation_id);
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
      if (state.conversationId && epoch === state.epoch) loadConversations();
    }
  }

  function currentModel() {
    const checked = document.querySelector('input[name="mode"]:checked');
    return checked && MODELS.includes(checked.value) ? checked.value : MODELS[0];
  }

  function clearTranscript() {
    state.epoch += 1;
    if (state.abort) state.abort.abort();
    setConversation(null);
    state.history = [];
    transcript().replaceChildren();
    $("empty").hidden = false;
  }

  function newConversation() {
    clearTranscript();
    showView("chat");
    $("question").focus();
  }

  /** A new conversation that asks ``question`` (from a post's or a story's button). */
  function askAbout(question) {
    if (state.busy) return;
    clearTranscript();
    submitQuestion(question);
  }

  // --- views -------------------------------------------------------------------------

  function showView(view) {
    state.view = view;
    $("now").hidden = view !== "now";
    $("chat").hidden = view !== "chat";
    $("view-now").setAttribute("aria-pressed", String(view === "now"));
    $("view-chat").setAttribute("aria-pressed", String(view === "chat"));
  }

  // --- conversations, kept on the server per key ---------------------------------------

  function setConversation(id) {
    state.conversationId = id;
    store(CONV_STORE, id);
    const conv = state.conversations.find((c) => c.id === id);
    $("chat-title").textContent = conv ? conv.title : "New conversation";
    $("chat-actions").hidden = !id;
    disarmDelete();
    for (const li of $("conversations").children) {
      li.classList.toggle("current", li.dataset.id === id);
    }
  }

  function conversationItem(c) {
    const li = el("li", "conversation");
    li.dataset.id = c.id;
    if (c.id === state.conversationId) li.classList.add("current");
    const open = el("button", "conversation-open",
      el("span", "conversation-title", String(c.title || "Conversation")));
    open.type = "button";
    const meta = el("span", "conversation-meta");
    meta.append(plural(Number(c.messages) || 0, "message") + " · ", timeNode(c.updated_at));
    open.append(meta);
    open.addEventListener("click", () => openConversation(c.id));
    li.append(open);
    return li;
  }

  async function loadConversations() {
    if (!state.key) return;
    try {
      const resp = await api("/v1/conversations?limit=50");
      if (!resp.ok) return;
      const body = await resp.json();
      state.conversations = Array.isArray(body.data) ? body.data : [];
    } catch (_) {
      return;
    }
    $("conversations").replaceChildren(...state.conversations.map(conversationItem));
    $("conversations-empty").hidden = state.conversations.length > 0;
    const current = state.conversations.find((c) => c.id === state.conversationId);
    if (current) $("chat-title").textContent = current.title;
  }

  /** Show a stored conversation: its questions, answers and their cited posts. */
  async function openConversation(id) {
    if (!state.key || state.busy) return;
    let conv;
    try {
      const resp = await api("/v1/conversations/" + encodeURIComponent(id));
      if (resp.status === 404) {
        if (state.conversationId === id || stored(CONV_STORE) === id) setConversation(null);
        loadConversations();
        return;
      }
      if (!resp.ok) throw await failureOf(resp);
      conv = await resp.json();
    } catch (err) {
      $("banner").textContent = "Couldn't open the conversation: " + describe(err);
      $("banner").hidden = false;
      return;
    }
    clearTranscript();
    const epoch = state.epoch;
    for (const m of conv.messages || []) {
      if (m.role === "user") {
        addUserMessage(String(m.content || ""));
        state.history.push({ role: "user", content: String(m.content || "") });
      } else if (m.role === "assistant") {
        const answer = addAnswer(conv.mode === "fun" ? "townsquare-fun" : "townsquare");
        answer.text = String(m.content || "");
        answer.citations = Array.isArray(m.citations) ? m.citations : [];
        finishAnswer(answer, null);
        state.history.push({ role: "assistant", content: answer.text });
      }
    }
    if (epoch !== state.epoch) return;
    setConversation(conv.id);
    $("chat-title").textContent = String(conv.title || "Conversation");
    $("sidebar").classList.remove("open");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
    showView("chat");
  }

  function startRename() {
    const id = state.conversationId;
    if (!id) return;
    const title = $("chat-title");
    const form = el("form", "rename-form");
    const input = el("input");
    input.type = "text";
    input.id = "rename-input";
    input.maxLength = 200;
    input.value = title.textContent;
    input.setAttribute("aria-label", "Conversation name");
    form.append(input);
    const done = () => {
      form.replaceWith(title);
      title.hidden = false;
      $("chat-rename").focus();
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const resp = await api("/v1/conversations/" + encodeURIComponent(id), {
          method: "PATCH",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ title: input.value }),
        });
        if (!resp.ok) throw await failureOf(resp);
        const body = await resp.json();
        title.textContent = String(body.title || "");
      } catch (err) {
        $("banner").textContent = "Couldn't rename the conversation: " + describe(err);
        $("banner").hidden = false;
      }
      done();
      loadConversations();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") done();
    });
    title.replaceWith(form);
    input.focus();
    input.select();
  }

  function disarmDelete() {
    window.clearTimeout(state.deleteArmed);
    state.deleteArmed = 0;
    $("chat-delete").textContent = "Delete";
  }

  /** First press arms (4 s), second deletes: no dialog, and keyboard-friendly. */
  async function deleteCurrent() {
    const id = state.conversationId;
    if (!id) return;
    if (!state.deleteArmed) {
      $("chat-delete").textContent = "Delete for good?";
      state.deleteArmed = window.setTimeout(disarmDelete, 4000);
      return;
    }
    disarmDelete();
    try {
      const resp = await api("/v1/conversations/" + encodeURIComponent(id), { method: "DELETE" });
      if (!resp.ok && resp.status !== 404) throw await failureOf(resp);
    } catch (err) {
      $("banner").textContent = "Couldn't delete the conversation: " + describe(err);
      $("banner").hidden = false;
      return;
    }
    clearTranscript();
    showView("now");
    loadConversations();
  }

  async function exportCurrent() {
    const id = state.conversationId;
    if (!id) return;
    try {
      const resp = await api("/v1/conversations/" + encodeURIComponent(id) +
        "/export?format=markdown");
      if (!resp.ok) throw await failureOf(resp);
      const blob = await resp.blob();
      const match = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const a = el("a");
      a.href = URL.createObjectURL(blob);
      a.download = match ? match[1] : "conversation.md";
      document.body.append(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      $("banner").textContent = "Couldn't export the conversation: " + describe(err);
      $("banner").hidden = false;
    }
  }

  // --- the live feed (SSE over fetch: EventSource cannot send the key) -------------------

  function remember(p) {
    let changed = false;
    if (p.source && !state.sources.has(p.source)) {
      state.sources.add(String(p.source));
      changed = true;
    }
    if (p.lang && !state.langs.has(p.lang)) {
      state.langs.add(String(p.lang));
      changed = true;
    }
    if (changed) fillChoices();
  }

  /** Keep the source and language menus to what has been seen, keeping each choice. */
  function fillChoices() {
    const fill = (select, values, all) => {
      const keep = select.value;
      const options = [el("option", null, all)];
      options[0].value = "";
      for (const v of [...values].sort()) {
        const o = el("option", null, v);
        o.value = v;
        options.push(o);
      }
      select.replaceChildren(...options);
      select.value = values.has(keep) ? keep : "";
    };
    for (const select of document.querySelectorAll(".source-select")) {
      fill(select, state.sources, "All sources");
    }
    for (const select of document.querySelectorAll(".lang-select")) {
      fill(select, state.langs, "All languages");
    }
  }

  function feedQuery() {
    const params = new URLSearchParams();
    const source = $("feed-source").value;
    const lang = $("feed-lang").value;
    const author = $("feed-author").value.trim().replace(/^@/, "");
    if (source) params.set("sources", source);
    if (lang) params.set("langs", lang);
    if (author) params.set("authors", author);
    params.set("backlog", "30");
    return params.toString();
  }

  function feedState(text, live) {
    $("feed-state").textContent = text;
    $("feed-state").className = "feed-state" + (live ? " on" : "");
  }

  function showPost(p, fresh) {
    const list = $("feed-list");
    const old = list.querySelector('li.post[data-id="' + CSS.escape(String(p.id)) + '"]');
    if (old) old.remove();
    const card = postCard(p);
    if (fresh) card.classList.add("new");
    list.prepend(card);
    while (list.children.length > FEED_MAX) list.lastElementChild.remove();
    $("feed-empty").hidden = true;
  }

  function heldNote() {
    const n = state.feed.held.length;
    $("feed-paused").hidden = !state.feed.paused;
    $("feed-paused").textContent = "Paused" + (n ? ": " + plural(n, "new post") +
      " waiting." : ".");
  }

  function startFeed() {
    stopFeed();
    const feed = state.feed;
    const gen = feed.gen;
    const controller = new AbortController();
    feed.abort = controller;
    feed.held = [];
    heldNote();
    $("feed-list").replaceChildren();
    $("feed-empty").hidden = false;
    feedState("connecting…", false);
    let ready = false;
    (async () => {
      try {
        const resp = await api("/v1/posts/stream?" + feedQuery(), {
          headers: { Accept: "text/event-stream" },
          signal: controller.signal,
        });
        if (resp.status === 401) {
          keyRefused((await failureOf(resp)).message);
          return;
        }
        if (!resp.ok) throw await failureOf(resp);
        await readEvents(resp.body, (data, name) => {
          if (gen !== feed.gen) return;
          if (name === "ready") {
            ready = true;
            feedState("live", true);
            return;
          }
          if (name !== "post") return;
          const post = JSON.parse(data);
          remember(post);
          if (ready && feed.paused) {
            feed.held.push(post);
            if (feed.held.length > PAUSED_MAX) feed.held.shift();
            heldNote();
          } else {
            showPost(post, ready);
          }
        });
        throw new Error("the feed ended");
      } catch (err) {
        if (gen !== feed.gen || (err && err.name === "AbortError")) return;
        const retry = err instanceof ApiFailure ? Number(err.retryAfter) * 1000 : NaN;
        feedState("reconnecting…", false);
        feed.retry = window.setTimeout(() => {
          if (gen === feed.gen && state.key) startFeed();
        }, Number.isFinite(retry) && retry > 0 ? retry : FEED_RETRY_MS);
      }
    })();
  }

  function stopFeed() {
    const feed = state.feed;
    feed.gen += 1;
    window.clearTimeout(feed.retry);
    if (feed.abort) feed.abort.abort();
    feed.abort = null;
  }

  function togglePause() {
    const feed = state.feed;
    feed.paused = !feed.paused;
    $("feed-pause").textContent = feed.paused ? "Resume" : "Pause";
    $("feed-pause").setAttribute("aria-pressed", String(feed.paused));
    if (!feed.paused) {
      for (const post of feed.held) showPost(post, true);
      feed.held = [];
    }
    heldNote();
  }

  // --- search --------------------------------------------------------------------------

  async function search() {
    const query = $("search-query").value.trim();
    const body = { query: query, limit: 30 };
    const since = $("search-since").value;
    const source = $("search-source").value;
    const lang = $("search-lang").value;
    if (since) body.since = since;
    if (source) body.sources = [source];
    if (lang) body.langs = [lang];
    if (!query) body.mode = "recent";
    const list = $("results-list");
    $("results").hidden = false;
    $("feed").hidden = true;
    $("results-title").textContent = "Searching…";
    try {
      const resp = await api("/v1/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!resp.ok) throw await failureOf(resp);
      const data = (await resp.json()).data || [];
      const terms = query.split(/\s+/).map((t) => t.replace(/^[#@"']+|["']+$/g, ""))
        .filter(Boolean);
      data.forEach(remember);
      list.replaceChildren(...data.map((p) => postCard(p, terms)));
      $("results-title").textContent = (data.length ? plural(data.length, "post") : "No post") +
        (query ? " for “" + query + "”" : " (newest)");
    } catch (err) {
      list.replaceChildren();
      $("results-title").textContent = "Search failed: " + describe(err);
    }
  }

  function closeResults() {
    $("results").hidden = true;
    $("feed").hidden = false;
    $("search-query").focus();
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
    li.dataset.id = String(s.id || "");
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
          const head = href ? externalLink(href, null, label) : el("span", null, label);
          list.append(el("li", null, head, el("span", "story-source-text", " " + text)));
        }
        li.append(list);
      }
    }
    const actions = el("div", "story-actions");
    const posts = Array.isArray(s.posts) ? s.posts : [];
    if (posts.length) {
      const shown = el("ol", "posts story-posts");
      shown.hidden = true;
      const toggle = el("button", "link story-open", "Show " + plural(posts.length, "post"));
      toggle.type = "button";
      toggle.setAttribute("aria-expanded", "false");
      toggle.addEventListener("click", () => {
        if (!shown.children.length) shown.append(...posts.map((p) => postCard(p)));
        shown.hidden = !shown.hidden;
        toggle.setAttribute("aria-expanded", String(!shown.hidden));
        toggle.textContent = (shown.hidden ? "Show " : "Hide ") + plural(posts.length, "post");
      });
      actions.append(toggle);
      li.append(actions, shown);
    } else {
      li.append(actions);
    }
    const ask = el("button", "link story-ask", "Ask about this");
    ask.type = "button";
    ask.addEventListener("click", () => askAbout("What is happening with " +
      JSON.stringify(String(s.title || "")) + "? What are people saying?"));
    actions.append(ask);
    return li;
  }

  async function pollTrends(gen) {
    state.trendsTimer = 0;
    if (!state.key || state.trendsGone || gen !== state.pollGen || document.hidden) return;
    let delay = TRENDS_EVERY_MS;
    try {
      // The first look never waits on the model (summaries already written come back);
      // later polls let the server write one more each time.
      const first = !state.storiesSeen;
      const mode = "&mode=" + (currentModel() === "townsquare-fun" ? "fun" : "regular") +
        "&summaries=" + (first ? 0 : 1);
      state.storiesSeen = true;
      if (first) delay = 100; // then at once ask for the summaries still missing
      let [trends, stories] = await Promise.all([
        getData("/v1/trends?window=1h"),
        getData("/v1/stories?window=1h" + mode),
      ]);
      if (trends === null && stories === null) {
        state.trendsGone = true; // this server has no trends: hide the panel for good
        $("trending").hidden = true;
        return;
      }
      // A quiet hour: the day's stories rather than an empty panel, and say so.
      let windowLabel = "last hour";
      if (stories !== null && !stories.length) {
        stories = await getData("/v1/stories?window=24h" + mode);
        windowLabel = "last 24 hours";
      }
      $("stories-window").textContent = windowLabel;
      const t = (trends || []).slice(0, 10);
      const s = (stories || []).slice(0, 5);
      $("trends").replaceChildren(...t.map(trendItem));
      // Keep a story's open post list open across refreshes.
      const open = new Set([...document.querySelectorAll(".story")]
        .filter((li) => li.querySelector(".story-open[aria-expanded=true]"))
        .map((li) => li.dataset.id));
      $("stories").replaceChildren(...s.map(storyItem));
      for (const li of $("stories").children) {
        if (open.has(li.dataset.id)) li.querySelector(".story-open").click();
      }
      $("trends-title").hidden = !t.length;
      $("stories-empty").hidden = s.length > 0;
      $("trending").hidden = false;
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

  /** Poll the live status and the stories; (re)open the feed unless ``keepFeed`` and open. */
  function startPolling(keepFeed) {
    stopPolling(keepFeed);
    pollLive(state.pollGen);
    pollTrends(state.pollGen);
    if (!keepFeed || !state.feed.abort) startFeed();
  }

  /** Stop both polls; a poll still in flight sees the new generation and stops too. */
  function stopPolling(keepFeed) {
    state.pollGen += 1;
    window.clearTimeout(state.liveTimer);
    window.clearTimeout(state.trendsTimer);
    state.liveTimer = 0;
    state.trendsTimer = 0;
    if (!keepFeed) stopFeed();
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
    $("view-now").addEventListener("click", () => showView("now"));
    $("view-chat").addEventListener("click", () => showView("chat"));
    $("toggle-sidebar").addEventListener("click", () => {
      const open = $("sidebar").classList.toggle("open");
      $("toggle-sidebar").setAttribute("aria-expanded", String(open));
    });
    $("chat-rename").addEventListener("click", startRename);
    $("chat-delete").addEventListener("click", deleteCurrent);
    $("chat-export").addEventListener("click", exportCurrent);
    $("feed-pause").addEventListener("click", togglePause);
    for (const id of ["feed-source", "feed-lang"]) {
      $(id).addEventListener("change", () => { if (state.key) startFeed(); });
    }
    let authorTimer = 0;
    $("feed-author").addEventListener("input", () => {
      window.clearTimeout(authorTimer);
      authorTimer = window.setTimeout(() => { if (state.key) startFeed(); }, 400);
    });
    $("feed-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.key) startFeed();
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.key) search();
      else askForKey();
    });
    $("results-close").addEventListener("click", closeResults);
    document.addEventListener("keydown", (event) => {
      // "/" jumps to the search box, as on most sites.
      const tag = event.target && event.target.tagName;
      if (event.key === "/" && !["INPUT", "TEXTAREA"].includes(tag) && !event.ctrlKey &&
          !event.metaKey) {
        event.preventDefault();
        showView("now");
        $("search-query").focus();
      }
    });
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
      if (!document.hidden && state.key) startPolling(true);
    });

    const key = keyFromFragment() || stored(KEY_STORE);
    if (key) setKey(key);
    else askForKey();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
