/*
 * liveprogress-client.js: the dependency-free transport client of liveprogress
 * (no build step, no CDN, no DOM rendering). It defines the global `LiveProgress`;
 * liveprogress-widgets.js, loaded after it, adds the page widgets to it
 * (LiveProgress.Bar, LiveProgress.LogView, LiveProgress.wire...).
 *
 *   const client = new LiveProgress({
 *     onJob(state) {},          // every newer state of a job, in seq order, never a step back
 *     onWatching(states) {},    // the owner's recent and active jobs, after watchMine()
 *     onError(frame) {},        // {type: "error", code, detail, job?}; code "session_ended":
 *                               // the session logged out, and the client stopped
 *     onTransport(name) {},     // "websocket", "sse" or "polling": the one now in use
 *     onLog(jobId, lines, droppedThrough) {},  // new log lines of jobs subscribed with logs
 *     onOpen(name) {},          // the transport in use got through (again)
 *     onClose() {},             // it was lost: reconnecting
 *   });
 *   client.subscribe(jobId);  client.subscribe(jobId, {logs: true});  client.watchMine();
 *   client.unsubscribe(jobId);
 *   client.start("demo.timer", {steps: 5});  client.cancel(jobId);  client.close();
 *   client.pause(jobId);  client.resume(jobId);
 *   client.start("demo.timer", {steps: 5}, {notify: {email: true}});  // email me when it ends
 *   client.notify(jobId, true).then((answer) => answer.email);  // or false; no flag: ask
 *   client.jobs                 // Map: job id -> newest state held
 *   LiveProgress.TERMINAL       // the statuses a job ends in
 *
 * Options (defaults): wsPath ("/ws/progress/"), apiPath ("/api/jobs/"),
 * transports (["websocket", "sse", "polling"]: the order to try), fallbackAfter (2),
 * minDelay (500 ms) and maxDelay (10000 ms) of the reconnect backoff,
 * pollInterval (1000 ms), csrfToken (null: the csrftoken cookie).
 *
 * It speaks the WebSocket first, at a URL derived from the page's own location
 * (wss:// behind https://). It reconnects with backoff and resubscribes with
 * `after`, so nothing is missed and nothing is repeated. When WebSockets fail
 * (`fallbackAfter` attempts in a row that never opened: a proxy that refuses
 * the upgrade), it falls back to Server-Sent Events (/api/jobs/events/ and
 * /api/jobs/<id>/events/), and when those fail too, to polling the JSON API.
 * Over SSE and polling, start and cancel are POSTs with the CSRF cookie.
 * A server that answers `unavailable` (a service it needs is down: HTTP 503, an
 * error frame, close code 4013) is asked again after the delay it gives
 * (`retry_after`): subscriptions and the owner's list come back by themselves; a
 * start that failed so goes to onError and is not sent again.
 */
(function (global) {
  "use strict";

  const TERMINAL = ["succeeded", "failed", "cancelled", "interrupted"];
  const isTerminal = (state) => TERMINAL.includes(state.status);

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
        // ?batch=1: what waits for this socket comes as one "batch" frame (protocol.md).
        const path = this.client.options.wsPath;
        socket = new WebSocket(this.client.url(path + (path.includes("?") ? "&" : "?") + "batch=1", true));
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
      socket.onclose = (event) => {
        if (this.socket !== socket) return;
        // 4401: the session ended (logged out); a new socket would own nothing.
        if (event.code === 4401) this.client.sessionEnded();
        else this.client.lost(this, opened);
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

  // Start, cancel, pause and resume over the JSON API: what SSE and polling use.
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
          ? client.http("POST", api, {kind: frame.kind, params: frame.params, notify: frame.notify})
          : client.http("POST", api + encodeURIComponent(frame.job) + "/" + frame.action + "/", {});
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
      source.addEventListener("batch", handle);
      source.addEventListener("session_ended", () => this.client.sessionEnded());
      // A service went down after the stream began; the stream ends and
      // EventSource comes back after the retry delay the server gave.
      source.addEventListener("unavailable", handle);
      source.onopen = () => this.markOpen();
      source.onerror = () => {
        if (this.sources.get(key) !== source) return;
        if (!this.opened) this.fail();
        else if (source.readyState === EventSource.CLOSED) {
          // The server refused to go on (an error status, or 204 for a job that
          // ended). EventSource doesn't say which: the job's own answer does (it
          // ended: kept; it is gone or no longer ours to see: onError), and the
          // stream opens again later unless the job has ended or gone.
          this.sources.delete(key);
          const again = () => {
            if (this.client.transport === this && !this.sources.has(key)) this.reopen(key);
          };
          setTimeout(() => {
            if (key === "mine") again();
            else this.client.fetchJob(key).then(again, again);
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
      if (!this.sources.has("mine")) this.open("mine", this.client.options.apiPath + "events/?batch=1");
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
      this.retryAfter = 0; // ms a server that said "unavailable" asked to wait
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
      // A server that said "unavailable" (close code 4013) is given the time it asked.
      const delay = Math.max(this.delay, this.retryAfter);
      this.retryAfter = 0;
      this.delay = Math.min(this.delay * 2, this.options.maxDelay);
      setTimeout(() => {
        if (this.transport === transport && !this.closed) transport.begin();
      }, delay * (0.75 + Math.random() / 2));
    }

    receive(frame) {
      if (frame.type === "batch") frame.frames.forEach((each) => this.receive(each));
      else if (frame.type === "job") this.keep(frame.job);
      else if (frame.type === "watching") {
        frame.jobs.forEach((state) => this.keep(state));
        this.options.onWatching(frame.jobs);
      } else if (frame.type === "log") this.keepLog(frame.job, frame.lines, frame.dropped_through || 0);
      else if (frame.type === "error") {
        if (frame.code === "unavailable") this.retryLater(frame);
        this.options.onError(frame);
      }
    }

    // A service the server needs is down: ask again for what the error answered
    // (a job's subscription, or the owner's list) once the server's delay is over.
    // A start is not sent again: the page says it failed, and the visitor decides.
    retryLater(frame) {
      const transport = this.transport;
      this.retryAfter = (frame.retry_after || 5) * 1000;
      setTimeout(() => {
        if (this.transport !== transport || this.closed || !transport.ready()) return;
        if (frame.job && this.subscribed.has(frame.job)) transport.follow(frame.job);
        else if (!frame.job && this.watchingMine) transport.followMine();
      }, this.retryAfter);
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
          // The network, or a service down on the server: the caller retries.
          if (error.type !== "error" || error.code === "unavailable") throw error;
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

    // options.notify: {email: true} emails the owner (a signed-in user) when it ends.
    start(kind, params, options) {
      const frame = {action: "start", kind: kind, params: params || {}};
      if (options && options.notify) frame.notify = options.notify;
      this.act(frame);
    }

    // Whether the owner is emailed when the job ends: `email` true or false chooses,
    // left out asks. Over the JSON API whatever the transport; a Promise of
    // {type: "notify", job, email}, rejected with the error frame.
    notify(id, email) {
      const path = this.options.apiPath + encodeURIComponent(id) + "/notify/";
      return email === undefined ? this.http("GET", path) : this.http("POST", path, {email: email});
    }

    cancel(id) {
      this.act({action: "cancel", job: id});
    }

    // Pause at the job's next checkpoint; resume goes on from it, on any worker.
    pause(id) {
      this.act({action: "pause", job: id});
    }

    resume(id) {
      this.act({action: "resume", job: id});
    }

    close() {
      this.closed = true;
      if (this.transport) this.transport.end();
    }

    // The server ended the session's connections (a logout): stop, and say so.
    sessionEnded() {
      if (this.closed) return;
      this.close();
      this.options.onError({type: "error", code: "session_ended", detail: "The session has ended: sign in again"});
      this.options.onClose();
    }
  }

  LiveProgress.TERMINAL = TERMINAL;
  global.LiveProgress = LiveProgress;
})(window);
