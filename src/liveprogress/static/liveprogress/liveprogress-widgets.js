/*
 * liveprogress-widgets.js: the dependency-free page widgets of liveprogress (no
 * build step, no CDN). Load it after liveprogress-client.js: it adds these to the
 * `LiveProgress` global that file defines. Every text is set as text, never as
 * markup (a job's message, its log lines, file names can't inject HTML), and goes
 * through Django's JavaScript catalog (gettext) when the page loads it.
 *
 * LiveProgress.Bar: one job's bar.
 *   const bar = new LiveProgress.Bar(element, {titles: {}});
 *     element: the markup of the template tag `{% liveprogress_bar job %}` (bar.html);
 *     titles: kind -> title (default: the element's .lp-title text, else the kind).
 *   bar.update(state)  renders a job's wire state: status badge, percent (a striped
 *                      bar when the total is unknown), message, outcome, stages,
 *                      files, elapsed / ETA / rate / start time (ticking every
 *                      second while it runs), Cancel hidden once it has ended.
 *                      The ETA says where it comes from when not from the job's
 *                      own pace ("(from past runs)"; its .lp-eta element's
 *                      data-source is the state's eta_source); a job waiting in
 *                      line says when it should start ("starts in about 40 s").
 *   bar.id, bar.element, bar.state (the newest rendered), bar.parts (its elements:
 *   title, badge, bar, fill, outcome, message, percent, elapsed, eta, rate,
 *   started, cancel, stages, files).
 *
 * LiveProgress.LogView: a job's log lines, oldest first.
 *   const log = new LiveProgress.LogView(element);
 *     element: holds an <ol> (one is appended when it has none).
 *   log.add(lines, droppedThrough)  appends an <li data-level data-seq> per line
 *     ({seq, level, text}, as the client's onLog gives them): a translated level in
 *     <span class="lp-level"> then the line's text. A droppedThrough > 0 first adds
 *     an <li class="lp-gap"> saying the older lines up to that seq were dropped.
 *     It keeps the list scrolled to the bottom when it was there.
 *   log.clear()  empties it.
 *
 * LiveProgress.wire(root, options): every [data-lp-job] bar under root (default:
 *   the document) live, its Cancel button cancelling; bars of jobs that had ended
 *   when the page was rendered are not subscribed. Options: the client's (see
 *   liveprogress-client.js), plus `client` (an existing one to use instead of a
 *   new one), `titles` (for the bars) and `onJob(state, bar)` (bar: undefined for
 *   a job with no bar here). Returns {client, bars (Map: id -> Bar), add(element)
 *   (wires one more bar element, returns its Bar)}. It runs by itself on
 *   `document` when this file's <script> has `data-autowire` (what
 *   `{% liveprogress_assets %}` emits).
 *
 * LiveProgress.indicator(element): client options (onTransport, onOpen, onClose)
 *   that show the connection in `element` (a role="status" line; may be null)
 *   with data-state="live"/"down", and name the transport on <html data-lp-transport>.
 *
 * LiveProgress.notifyTitle(state): call it from onJob: a job seen running here
 *   that ends while the tab is in the background marks the page's title (✓/✗ and
 *   its status) until the tab is looked at again, and shows a browser
 *   notification when they were asked for.
 *
 * LiveProgress.notifyButton(button): a toggle that asks for browser notifications
 *   (remembered in localStorage); the page's [data-lp-notify] gets it by itself.
 *
 * LiveProgress.duration(seconds): "m:ss", or "h:mm:ss" from an hour up.
 *
 * Times are the server's (from <meta name="liveprogress-now">, which the template
 * tag writes), so elapsed times don't drift with a client clock that is off.
 */
(function (global) {
  "use strict";

  const LiveProgress = global.LiveProgress;
  if (typeof LiveProgress !== "function") {
    throw new Error("liveprogress-widgets.js needs liveprogress-client.js, loaded before it");
  }
  const TERMINAL = LiveProgress.TERMINAL;
  const isTerminal = (state) => TERMINAL.includes(state.status);
  const gettext = (text) => (global.gettext ? global.gettext(text) : text);
  const format = (text, values) =>
    global.interpolate ? global.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, key) => values[key]);

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
    paused: () => gettext("Paused"),
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
        if (state.cancel_requested) return gettext("Cancelling…");
        if (state.pause_requested) return gettext("Pausing at the next checkpoint…");
        if (state.status === "paused") return gettext("Paused: resume it to go on from where it stopped.");
        if (state.resumed_from != null && state.status === "running") {
          return format(gettext("Resumed from %(count)s."), {count: state.resumed_from});
        }
        return "";
    }
  }

  // A start some seconds away, as the server's message says it: under a minute by
  // 10 s, under ten minutes by the minute, under an hour by 5 min, then by the hour
  // (queueing.py rounds the same way).
  const FEW_SECONDS = 10;
  function roughly(seconds) {
    const steps = [[60, 10], [600, 60], [3600, 300], [Infinity, 3600]];
    const step = steps.find(([below]) => seconds < below)[1];
    const rounded = Math.round(seconds / step) * step;
    if (rounded < 60) return format(gettext("%(seconds)s s"), {seconds: rounded});
    if (rounded < 3600) return format(gettext("%(minutes)s min"), {minutes: rounded / 60});
    return format(gettext("%(hours)s h"), {hours: rounded / 3600});
  }

  // When a job waiting in line should start, counted down from its state's time.
  function startsIn(state) {
    const left = state.starts_in_s - (serverNow() - state.updated_at);
    if (left < FEW_SECONDS) return gettext("starts in a few seconds");
    return format(gettext("starts in about %(time)s"), {time: roughly(left)});
  }

  // A job's ETA and, where it is not the job's own pace, where it comes from: a
  // queued job's is how long it should run; a running job's counts down.
  const ETA_SOURCES = {
    history: () => gettext("from past runs"),
    blend: () => gettext("from past runs and its pace"),
  };
  function eta(state, receivedAt) {
    const from = ETA_SOURCES[state.eta_source];
    let text;
    if (state.status === "queued") {
      text = format(gettext("takes about %(time)s"), {time: duration(state.eta_s)});
    } else {
      const left = state.eta_s - (serverNow() - receivedAt);
      text = format(gettext("about %(time)s left"), {time: duration(Math.max(left, 0))});
    }
    return from ? text + " (" + from() + ")" : text;
  }

  // What a queued job waits for, counting down where it has a time: its retry, its
  // scheduled start, its place in line.
  function waiting(state) {
    const now = serverNow();
    if (state.retry_at != null && state.retry_at > now) {
      return format(gettext("next attempt in %(time)s"), {time: duration(state.retry_at - now)});
    }
    if (state.run_after != null && state.run_after > now) {
      return format(gettext("starts at %(time)s"), {time: clockTime(state.run_after)});
    }
    if (state.status === "paused" && state.paused_at != null) {
      return format(gettext("paused since %(time)s"), {time: clockTime(state.paused_at)});
    }
    if (state.queue_position != null) {
      const place = format(gettext("number %(place)s in line"), {place: state.queue_position});
      return state.starts_in_s == null ? place : place + ", " + startsIn(state);
    }
    return gettext("waiting to start");
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
        pause: find(".lp-pause"),
        resume: find(".lp-resume"),
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
      if (p.pause) {
        // Another engine's task (its kind is "engine:task") can't pause.
        p.pause.hidden = done || state.status === "paused" || state.kind.includes(":");
        p.pause.disabled = Boolean(state.pause_requested || state.cancel_requested);
      }
      if (p.resume) p.resume.hidden = state.status !== "paused";
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
      if (state.started_at === null || state.status === "queued" || state.status === "paused") {
        p.elapsed.textContent = done ? "" : waiting(state);
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
      const known = !done && state.eta_s != null;
      p.eta.textContent = known ? eta(state, this.receivedAt) : "";
      p.eta.dataset.source = (known && state.eta_source) || "";
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
      if (bar.parts.pause) bar.parts.pause.addEventListener("click", () => client.pause(bar.id));
      if (bar.parts.resume) bar.parts.resume.addEventListener("click", () => client.resume(bar.id));
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

  LiveProgress.indicator = indicator;
  LiveProgress.notifyTitle = notifyTitle;
  LiveProgress.notifyButton = notifyButton;
  LiveProgress.Bar = Bar;
  LiveProgress.LogView = LogView;
  LiveProgress.wire = wire;
  LiveProgress.duration = duration;

  const script = document.currentScript;
  const autowire = script && script.hasAttribute("data-autowire");
  const ready = () => {
    notifyButton(document.querySelector("[data-lp-notify]"));
    if (autowire) wire(document);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})(window);
