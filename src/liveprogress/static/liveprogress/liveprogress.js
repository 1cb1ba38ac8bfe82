/*
 * liveprogress.js: the dependency-free client of liveprogress (no build step, no CDN).
 *
 * 1. A client that follows jobs live:
 *
 *   const client = new LiveProgress({
 *     onJob(state) {},          // every newer state of a job, in seq order, never a step back
 *     onWatching(states) {},    // the owner's recent and active jobs, after watchMine()
 *     onError(frame) {},        // {type: "error", code, detail, job?}
 *     onTransport(name) {},     // "websocket", "sse" or "polling": the one now in use
 *     onLog(jobId, lines, droppedThrough) {},  // new log lines of jobs subscribed with logs
 *   });
 *   client.subscribe(jobId);  client.subscribe(jobId, {logs: true});  client.watchMine();
 *   client.unsubscribe(jobId);
 *   client.start("demo.timer", {steps: 5});  client.cancel(jobId);  client.close();
 *
 *   It speaks the WebSocket first, at a URL derived from the page's own location
 *   (wss:// behind https://). It reconnects with backoff and resubscribes with
 *   `after`, so nothing is missed and nothing is repeated. When WebSockets fail
 *   (`fallbackAfter` attempts in a row that never opened: a proxy that refuses
 *   the upgrade), it falls back to Server-Sent Events (/api/jobs/events/ and
 *   /api/jobs/<id>/events/), and when those fail too, to polling the JSON API.
 *   Over SSE and polling, start and cancel are POSTs with the CSRF cookie.
 *
 * 2. A bar: `new LiveProgress.Bar(element)` renders states into the markup of the
 *   template tag `{% liveprogress_bar job %}` (bar.html): status, percent, message,
 *   stages, files, times; `bar.update(state)`. A log: `new LiveProgress.LogView(element)`
 *   shows log lines (as text, never markup); `log.add(lines, droppedThrough)`.
 *
 * 3. Wiring: `LiveProgress.wire(root)` makes every `[data-lp-job]` bar under root
 *   live, with its Cancel button; it runs by itself on pages that load this file
 *   with `data-autowire` (what `{% liveprogress_assets %}` does).
 *
 * Text goes through Django's JavaScript catalog (gettext) when the page loads it.
 */
(function (global) {
  "use strict";

  const TERMINAL = ["succeeded", "failed", "cancelled", "interrupted"];
  const isTerminal = (state) => TERMINAL.includes(state.status);
  const gettext = (text) => (global.gettext ? global.gettext(text) : text);
  const format = (text, values) =>
    global.interpolate ? global.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, key) => values[key]);

  const defaults = {
    wsPath: "/ws/progress/",
    apiPath: "/api/jobs/",
    transports: ["websocket", "sse", "polling"],
    fallbackAfter: 2,
    minDelay: 500,
    maxDelay: 10000,
    pollInterval: 1000,
    csrfToken: null,
    onJob() {},
    onWatching() {},
    onError() {},
    onTransport() {},
    onLog() {},
    onOpen() {},
    onClose() {},
  };

  function cookie(name) {
    const found = document.cookie.split("; ").find((item) => item.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
  }

  function networkError(error, job) {
    const frame = {type: "error", code: "network", detail: String(error && error.message || error)};
    if (job) frame.job = job;
    return frame;
  }

  // -- transports ------------------------------------------------------------------
  // Each one: name, begin() (connect), end(), follow(id), unfollow(id), followMine(),
  // act(frame) (start/cancel), ready(). They hand frames to client.receive() and
  // report client.opened(this) / client.lost(this, everOpened).

  class SocketTransport {
    constructor(client) {
      this.client = client;
      this.name = "websocket";
      this.socket = null;
    }

    begin() {
      let socket;
      try {
        socket = new WebSocket(this.client.url(this.client.options.wsPath, true));
      } catch (error) {
        setTimeout(() => this.client.lost(this, false), 0);
        return;
      }
      this.socket = socket;
      let opened = false;
      socket.onopen = () => {
        opened = true;
        for (const id of this.client.subscribed) this.follow(id);
        if (this.client.watchingMine) this.followMine();
        this.client.opened(this);
      };
      socket.onmessage = (event) => this.client.receive(JSON.parse(event.data));
      socket.onclose = () => {
        if (this.socket === socket) this.client.lost(this, opened);
      };
    }

    end() {
      const socket = this.socket;
      this.socket = null;
      if (socket) socket.close();
    }

    ready() {
      return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
    }

    send(frame) {
      if (this.ready()) this.socket.send(JSON.stringify(frame));
    }

    follow(id) {
      this.send({
        action: "subscribe",
        job: id,
        after: this.client.seqOf(id),
        log_after: this.client.logs.get(id),
      });
    }

    unfollow(id) {
      this.send({action: "unsubscribe", job: id});
    }

    followMine() {
      this.send({action: "watch_mine"});
    }

    act(frame) {
      this.send(frame);
    }
  }

  // Start and cancel over the JSON API: what SSE and polling use.
  class HttpActions {
    constructor(client) {
      this.client = client;
    }

    ready() {
      return true;
    }

    act(frame) {
      const client = this.client;
      const api = client.options.apiPath;
      const request =
        frame.action === "start"
          ? client.http("POST", api, {kind: frame.kind, params: frame.params})
          : client.http("POST", api + encodeURIComponent(frame.job) + "/cancel/", {});
      request.then(
        (state) => {
          client.keep(state);
          if (frame.action === "start") client.subscribe(state.id);
        },
        (error) => client.options.onError(error.type === "error" ? error : networkError(error, frame.job))
      );
    }
  }

  class EventsTransport extends HttpActions {
    constructor(client) {
      super(client);
      this.name = "sse";
      this.sources = new Map(); // "mine" or a job id -> EventSource
    }

    begin() {
      if (typeof global.EventSource !== "function") {
        setTimeout(() => this.client.lost(this, false), 0);
        return;
      }
      this.failed = false;
      this.opened = false;
      if (this.client.watchingMine) this.followMine();
      for (const id of this.client.subscribed) this.follow(id);
      if (!this.sources.size) this.markOpen();
    }

    end() {
      for (const source of this.sources.values()) source.close();
      this.sources.clear();
    }

    markOpen() {
      if (!this.opened) {
        this.opened = true;
        this.client.opened(this);
      }
    }

    fail() {
      // It never got through: this transport doesn't work here.
      this.end();
      if (!this.failed) {
        this.failed = true;
        setTimeout(() => this.client.lost(this, false), 0);
      }
    }

    open(key, path) {
      let source;
      try {
        source = new global.EventSource(path);
      } catch (error) {
        this.fail();
        return;
      }
      this.sources.set(key, source);
      const handle = (event) => this.client.receive(JSON.parse(event.data));
      source.addEventListener("job", handle);
      source.addEventListener("watching", handle);
      source.addEventListener("log", handle);
      source.onopen = () => this.markOpen();
      source.onerror = () => {
        if (this.sources.get(key) !== source) return;
        if (!this.opened) this.fail();
        else if (source.readyState === EventSource.CLOSED) {
          // The server refused to go on (an error status, or 204 for a job that
          // ended): open it again later unless the job has ended.
          this.sources.delete(key);
          setTimeout(() => {
            if (this.client.transport === this && !this.sources.has(key)) this.reopen(key);
          }, this.client.options.maxDelay / 2);
        }
        // Otherwise EventSource reconnects by itself, with Last-Event-ID.
      };
    }

    reopen(key) {
      if (key === "mine") {
        if (this.client.watchingMine) this.followMine();
      } else if (this.client.subscribed.has(key)) this.follow(key);
    }

    follow(id) {
      const known = this.client.jobs.get(id);
      if (known && isTerminal(known)) return;
      const logs = this.client.logs.get(id);
      if (this.client.watchingMine && logs === undefined) {
        // The owner's stream carries this job's states; fetch its snapshot once.
        if (!known) this.client.fetchJob(id);
        return;
      }
      if (this.sources.has(id)) return;
      const query = new URLSearchParams();
      const after = this.client.seqOf(id);
      if (after !== undefined) query.set("after", after);
      if (logs !== undefined) query.set("log_after", logs);
      const path = this.client.options.apiPath + encodeURIComponent(id) + "/events/";
      const search = query.toString();
      this.open(id, path + (search ? "?" + search : ""));
    }

    unfollow(id) {
      const source = this.sources.get(id);
      if (source) source.close();
      this.sources.delete(id);
    }

    followMine() {
      if (!this.sources.has("mine")) this.open("mine", this.client.options.apiPath + "events/");
    }

    ended(state) {
      // The server ends a job's stream after its final state; don't reconnect.
      this.unfollow(state.id);
    }
  }

  class PollingTransport extends HttpActions {
    constructor(client) {
      super(client);
      this.name = "polling";
      this.timer = null;
      this.sentWatching = false;
    }

    begin() {
      this.stopped = false;
      this.sentWatching = false;
      this.delay = this.client.options.pollInterval;
      this.poll();
    }

    end() {
      this.stopped = true;
      clearTimeout(this.timer);
    }

    follow() {}
    unfollow() {}

    followMine() {
      this.sentWatching = false;
    }

    async poll() {
      const client = this.client;
      const api = client.options.apiPath;
      try {
        const listed = new Set();
        if (client.watchingMine) {
          const body = await client.http("GET", api);
          body.jobs.forEach((state) => listed.add(state.id));
          if (!this.sentWatching) {
            this.sentWatching = true;
            client.receive({type: "watching", jobs: body.jobs});
          } else body.jobs.forEach((state) => client.keep(state));
        }
        for (const id of client.subscribed) {
          const known = client.jobs.get(id);
          if (client.logs.has(id)) await client.fetchLog(id);
          if (listed.has(id) || (known && isTerminal(known))) continue;
          await client.fetchJob(id);
        }
        client.opened(this);
        this.delay = client.options.pollInterval;
      } catch (error) {
        this.delay = Math.min(this.delay * 2, client.options.maxDelay);
        client.options.onClose();
      }
      if (!this.stopped) this.timer = setTimeout(() => this.poll(), this.delay);
    }
  }

  const TRANSPORTS = {websocket: SocketTransport, sse: EventsTransport, polling: PollingTransport};

  // -- the client ------------------------------------------------------------------

  class LiveProgress {
    constructor(options) {
      this.options = Object.assign({}, defaults, options || {});
      this.jobs = new Map(); // id -> newest state
      this.subscribed = new Set();
      this.logs = new Map(); // id -> newest log line seq held, for jobs followed with logs
      this.watchingMine = false;
      this.pending = []; // start/cancel frames waiting for a transport that is ready
      this.failures = 0;
      this.delay = this.options.minDelay;
      this.names = this.options.transports.filter((name) => name in TRANSPORTS);
      this.index = 0;
      this.transport = null;
      this.closed = false;
      this.use(0);
    }

    url(path, websocket) {
      const location = global.location;
      if (!websocket) return path;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + location.host + path;
    }

    use(index) {
      if (this.transport) this.transport.end();
      this.index = index;
      this.failures = 0;
      this.delay = this.options.minDelay;
      this.transport = new TRANSPORTS[this.names[index]](this);
      this.options.onTransport(this.transport.name);
      this.transport.begin();
    }

    opened(transport) {
      if (transport !== this.transport) return;
      this.failures = 0;
      this.delay = this.options.minDelay;
      const waiting = this.pending;
      this.pending = [];
      waiting.forEach((frame) => transport.act(frame));
      this.options.onOpen(transport.name);
    }

    lost(transport, everOpened) {
      if (transport !== this.transport || this.closed) return;
      this.options.onClose();
      if (!everOpened && ++this.failures >= this.options.fallbackAfter && this.index + 1 < this.names.length) {
        this.use(this.index + 1);
        return;
      }
      const delay = this.delay;
      this.delay = Math.min(this.delay * 2, this.options.maxDelay);
      setTimeout(() => {
        if (this.transport === transport && !this.closed) transport.begin();
      }, delay * (0.75 + Math.random() / 2));
    }

    receive(frame) {
      if (frame.type === "job") this.keep(frame.job);
      else if (frame.type === "watching") {
        frame.jobs.forEach((state) => this.keep(state));
        this.options.onWatching(frame.jobs);
      } else if (frame.type === "log") this.keepLog(frame.job, frame.lines, frame.dropped_through || 0);
      else if (frame.type === "error") this.options.onError(frame);
    }

    keepLog(id, lines, droppedThrough) {
      const held = this.logs.get(id);
      if (held === undefined) return; // not followed with logs
      const fresh = lines.filter((line) => line.seq > held);
      const dropped = droppedThrough > held ? droppedThrough : 0;
      if (!fresh.length && !dropped) return;
      this.logs.set(id, Math.max(held, dropped, ...fresh.map((line) => line.seq)));
      this.options.onLog(id, fresh, dropped);
    }

    fetchLog(id) {
      const after = this.logs.get(id) || 0;
      const path = this.options.apiPath + encodeURIComponent(id) + "/logs/?after=" + after;
      return this.http("GET", path).then((body) => this.keepLog(id, body.lines, body.dropped_through));
    }

    keep(state) {
      const known = this.jobs.get(state.id);
      if (known && known.seq >= state.seq) return; // a duplicate or an older state
      this.jobs.set(state.id, state);
      if (isTerminal(state) && this.transport && this.transport.ended) this.transport.ended(state);
      this.options.onJob(state);
    }

    seqOf(id) {
      const known = this.jobs.get(id);
      return known ? known.seq : undefined;
    }

    http(method, path, body) {
      const headers = {Accept: "application/json"};
      const init = {method: method, headers: headers, credentials: "same-origin"};
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        headers["X-CSRFToken"] = this.options.csrfToken || cookie("csrftoken") || "";
        init.body = JSON.stringify(body);
      }
      return fetch(path, init).then((response) =>
        response.json().then(
          (data) => {
            if (!response.ok) throw data;
            return data;
          },
          () => {
            throw {type: "error", code: "http", detail: response.status + " " + response.statusText};
          }
        )
      );
    }

    fetchJob(id) {
      return this.http("GET", this.options.apiPath + encodeURIComponent(id) + "/").then(
        (state) => this.keep(state),
        (error) => {
          if (error.type !== "error") throw error; // the network: the caller retries
          this.subscribed.delete(id);
          this.options.onError(Object.assign({job: id}, error));
        }
      );
    }

    act(frame) {
      if (this.transport && this.transport.ready()) this.transport.act(frame);
      else this.pending.push(frame);
    }

    // options.logs: also its log lines (replayed from the first, or after the
    // newest held, on every (re)subscribe: no gap, no repeat).
    subscribe(id, options) {
      this.subscribed.add(id);
      if (options && options.logs && !this.logs.has(id)) this.logs.set(id, 0);
      if (this.transport) this.transport.follow(id);
    }

    unsubscribe(id) {
      this.subscribed.delete(id);
      this.logs.delete(id);
      if (this.transport) this.transport.unfollow(id);
    }

    watchMine() {
      this.watchingMine = true;
      if (this.transport) this.transport.followMine();
    }

    start(kind, params) {
      this.act({action: "start", kind: kind, params: params || {}});
    }

    cancel(id) {
      this.act({action: "cancel", job: id});
    }

    close() {
      this.closed = true;
      if (this.transport) this.transport.end();
    }
  }

  // -- time ------------------------------------------------------------------------

  // Server time minus this browser's, from <meta name="liveprogress-now"> when the
  // page has it (the template tag writes it): elapsed times don't drift with a
  // client clock that is off.
  const nowMeta = document.querySelector('meta[name="liveprogress-now"]');
  const skew = nowMeta ? Number(nowMeta.content) - Date.now() / 1000 : 0;
  const serverNow = () => Date.now() / 1000 + (Number.isFinite(skew) ? skew : 0);

  function duration(seconds) {
    const whole = Math.max(0, Math.round(seconds));
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = String(whole % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  function clockTime(epoch) {
    const lang = document.documentElement.lang || undefined;
    const date = new Date(epoch * 1000);
    const today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString(lang) : date.toLocaleString(lang);
  }

  // -- the bar ---------------------------------------------------------------------

  const STATUS_LABELS = {
    queued: () => gettext("Queued"),
    running: () => gettext("Running"),
    succeeded: () => gettext("Succeeded"),
    failed: () => gettext("Failed"),
    cancelled: () => gettext("Cancelled"),
    interrupted: () => gettext("Interrupted"),
  };

  function outcome(state) {
    switch (state.status) {
      case "succeeded":
        return gettext("Completed.");
      case "failed":
        return format(gettext("Failed: %(error)s"), {error: state.error || gettext("unknown error")});
      case "cancelled":
        return gettext("Cancelled: it was stopped on request.");
      case "interrupted":
        return gettext("Interrupted: the server stopped while it ran.");
      default:
        return state.cancel_requested ? gettext("Cancelling…") : "";
    }
  }

  const liveBars = new Set();

  class Bar {
    constructor(element, options) {
      this.element = element;
      this.titles = (options && options.titles) || {};
      this.state = null;
      const find = (selector) => element.querySelector(selector);
      this.parts = {
        title: find(".lp-title"),
        badge: find(".lp-badge"),
        bar: find(".lp-bar"),
        fill: find(".lp-bar-fill"),
        outcome: find(".lp-outcome"),
        message: find(".lp-message"),
        percent: find(".lp-percent"),
        elapsed: find(".lp-elapsed"),
        eta: find(".lp-eta"),
        rate: find(".lp-rate"),
        started: find(".lp-started"),
        cancel: find(".lp-cancel"),
        stages: find(".lp-stages"),
        files: find(".lp-files"),
      };
    }

    get id() {
      return this.element.dataset.lpJob;
    }

    update(state) {
      const p = this.parts;
      const done = isTerminal(state);
      this.state = state;
      this.receivedAt = serverNow();
      const el = this.element;
      el.dataset.lpJob = state.id;
      el.dataset.kind = state.kind;
      el.dataset.status = state.status;
      const title = this.titles[state.kind] || p.title.textContent || state.kind;
      p.title.textContent = title;
      p.bar.setAttribute("aria-label", title);
      p.badge.textContent = (STATUS_LABELS[state.status] || (() => state.status))();
      const indeterminate = state.percent === null && !done;
      p.bar.classList.toggle("lp-indeterminate", indeterminate);
      // Unknown total: a full, striped bar (moving while it runs).
      p.fill.style.width = (state.percent === null ? 100 : state.percent) + "%";
      if (state.percent === null) {
        p.bar.removeAttribute("aria-valuenow");
        p.bar.setAttribute("aria-valuetext", state.message || p.badge.textContent);
        p.percent.textContent = "";
      } else {
        const whole = Math.floor(state.percent);
        p.bar.setAttribute("aria-valuenow", String(whole));
        p.bar.setAttribute("aria-valuetext", whole + "%" + (state.message ? " " + state.message : ""));
        p.percent.textContent = whole + "%";
      }
      p.message.textContent = state.message;
      p.outcome.textContent = outcome(state);
      if (p.stages) this.renderStages(state.stages || []);
      if (p.files) this.renderFiles(state.files || []);
      if (p.cancel) {
        p.cancel.hidden = done;
        p.cancel.disabled = state.cancel_requested;
      }
      if (done) liveBars.delete(this);
      else liveBars.add(this);
      this.tick();
    }

    renderStages(stages) {
      const list = this.parts.stages;
      list.hidden = !stages.length;
      list.replaceChildren(
        ...stages.map((stage) => {
          const item = document.createElement("li");
          item.textContent = stage.name;
          item.dataset.status = stage.status;
          if (stage.status === "running") item.setAttribute("aria-current", "step");
          return item;
        })
      );
    }

    renderFiles(files) {
      const list = this.parts.files;
      list.hidden = !files.length;
      list.replaceChildren(
        ...files.map((file) => {
          const item = document.createElement("li");
          const link = document.createElement("a");
          link.textContent = file.name;
          if (file.url) link.href = file.url;
          link.setAttribute("download", file.name);
          const size = document.createElement("span");
          size.className = "lp-size";
          size.textContent = " " + bytes(file.size);
          item.append(link, size);
          return item;
        })
      );
    }

    tick() {
      const state = this.state;
      const p = this.parts;
      if (!state) return;
      const done = isTerminal(state);
      if (state.started_at === null) {
        p.elapsed.textContent = done ? "" : gettext("waiting to start");
        p.started.textContent = "";
      } else {
        const end = done && state.finished_at !== null ? state.finished_at : serverNow();
        const took = duration(end - state.started_at);
        p.elapsed.textContent = done
          ? format(gettext("took %(time)s"), {time: took})
          : format(gettext("running for %(time)s"), {time: took});
        p.started.textContent = format(gettext("started %(time)s"), {time: clockTime(state.started_at)});
      }
      if (p.rate) {
        p.rate.textContent =
          done || state.rate === null || state.rate === undefined
            ? ""
            : format(gettext("%(rate)s a second"), {rate: Number(state.rate.toPrecision(3)).toLocaleString(document.documentElement.lang || undefined)});
      }
      if (done || state.eta_s === null) p.eta.textContent = "";
      else {
        const left = state.eta_s - (serverNow() - this.receivedAt);
        p.eta.textContent = format(gettext("about %(time)s left"), {time: duration(Math.max(left, 0))});
      }
    }
  }

  setInterval(() => liveBars.forEach((bar) => bar.tick()), 1000);

  function bytes(size) {
    if (size < 1024) return size + " B";
    if (size < 1024 * 1024) return (size / 1024).toFixed(1) + " KB";
    return (size / 1024 / 1024).toFixed(1) + " MB";
  }

  // A job's log lines, oldest first, in an element holding an <ol> (text only).
  class LogView {
    constructor(element) {
      this.element = element;
      this.list = element.querySelector("ol") || element.appendChild(document.createElement("ol"));
    }

    add(lines, droppedThrough) {
      const list = this.list;
      const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      if (droppedThrough) {
        const gap = document.createElement("li");
        gap.className = "lp-gap";
        gap.textContent = format(gettext("Older lines up to #%(seq)s were dropped."), {seq: droppedThrough});
        list.append(gap);
      }
      for (const line of lines) {
        const item = document.createElement("li");
        item.dataset.level = line.level;
        item.dataset.seq = line.seq;
        const level = document.createElement("span");
        level.className = "lp-level";
        level.textContent = (LEVEL_LABELS[line.level] || (() => line.level))();
        item.append(level, document.createTextNode(line.text));
        list.append(item);
      }
      if (atBottom) list.scrollTop = list.scrollHeight;
    }

    clear() {
      this.list.replaceChildren();
    }
  }

  const LEVEL_LABELS = {
    debug: () => gettext("debug"),
    info: () => gettext("info"),
    warning: () => gettext("warning"),
    error: () => gettext("error"),
  };

  // Every [data-lp-job] under root, live. Options: those of the client, plus
  // `client` (an existing one) and `titles` (kind -> title, for new rows).
  function wire(root, options) {
    options = options || {};
    const bars = new Map();
    const userOnJob = options.onJob || function () {};
    const client =
      options.client ||
      new LiveProgress(
        Object.assign({}, options, {
          onJob(state) {
            const bar = bars.get(state.id);
            if (bar) bar.update(state);
            userOnJob(state, bar);
          },
        })
      );
    function add(element) {
      const bar = new Bar(element, options);
      bars.set(bar.id, bar);
      const known = client.jobs.get(bar.id);
      if (known) bar.update(known);
      if (bar.parts.cancel) bar.parts.cancel.addEventListener("click", () => client.cancel(bar.id));
      if (!TERMINAL.includes(element.dataset.status)) client.subscribe(bar.id);
      return bar;
    }
    (root || document).querySelectorAll("[data-lp-job]").forEach(add);
    return {client: client, bars: bars, add: add};
  }

  // -- page helpers ----------------------------------------------------------------

  const TRANSPORT_LABELS = {
    websocket: () => gettext("Live (WebSocket)"),
    sse: () => gettext("Live (Server-Sent Events)"),
    polling: () => gettext("Live (polling)"),
  };

  // Client options that show the connection in `element` (a role="status" line)
  // and name the transport in use on <html data-lp-transport>.
  function indicator(element) {
    let name = "";
    return {
      onTransport(transport) {
        name = transport;
        document.documentElement.dataset.lpTransport = transport;
      },
      onOpen() {
        if (!element) return;
        element.dataset.state = "live";
        element.textContent = (TRANSPORT_LABELS[name] || (() => name))();
      },
      onClose() {
        if (!element) return;
        element.dataset.state = "down";
        element.textContent = gettext("Reconnecting…");
      },
    };
  }

  // The completion notice: a job seen running here that ends while the tab is in
  // the background marks the page's title until the tab is looked at again.
  const seenActive = new Set();
  let originalTitle = null;
  function notifyTitle(state) {
    if (!isTerminal(state)) {
      seenActive.add(state.id);
      return;
    }
    if (!seenActive.delete(state.id) || !document.hidden) return;
    if (originalTitle === null) originalTitle = document.title;
    const mark = state.status === "succeeded" ? "\u2713" : "\u2717";
    const label = (STATUS_LABELS[state.status] || (() => state.status))();
    document.title = mark + " " + label + " \u00b7 " + originalTitle;
    if (notificationsWanted()) {
      try {
        new Notification(label, {body: outcome(state) + (state.message ? " " + state.message : ""), tag: state.id});
      } catch (error) {
        // Some browsers only notify from a service worker: the title says it anyway.
      }
    }
  }

  // The optional browser notification: asked for once by a click (browsers only
  // allow that), remembered in localStorage.
  const NOTIFY_KEY = "liveprogress.notify";
  function notificationsWanted() {
    return typeof Notification === "function" && Notification.permission === "granted" &&
      global.localStorage && localStorage.getItem(NOTIFY_KEY) === "1";
  }

  function notifyButton(button) {
    if (!button || typeof Notification !== "function") return;
    const show = () => {
      const on = notificationsWanted();
      button.setAttribute("aria-pressed", String(on));
      button.textContent = on ? gettext("Notifications on") : gettext("Notify me when a job ends");
    };
    button.hidden = false;
    show();
    button.addEventListener("click", () => {
      if (notificationsWanted()) {
        localStorage.removeItem(NOTIFY_KEY);
        show();
        return;
      }
      Notification.requestPermission().then((permission) => {
        if (permission === "granted") localStorage.setItem(NOTIFY_KEY, "1");
        show();
      });
    });
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && originalTitle !== null) {
      document.title = originalTitle;
      originalTitle = null;
    }
  });

  LiveProgress.TERMINAL = TERMINAL;
  LiveProgress.indicator = indicator;
  LiveProgress.notifyTitle = notifyTitle;
  LiveProgress.notifyButton = notifyButton;
  LiveProgress.Bar = Bar;
  LiveProgress.LogView = LogView;
  LiveProgress.wire = wire;
  LiveProgress.duration = duration;
  global.LiveProgress = LiveProgress;

  const script = document.currentScript;
  const autowire = script && script.hasAttribute("data-autowire");
  const ready = () => {
    notifyButton(document.querySelector("[data-lp-notify]"));
    if (autowire) wire(document);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})(window);
