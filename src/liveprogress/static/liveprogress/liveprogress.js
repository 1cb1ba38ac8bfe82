/*
 * liveprogress.js: a dependency-free client for liveprogress's WebSocket.
 *
 *   const client = new LiveProgress({
 *     onJob(state) {},          // every newer state of a job (ordered by seq)
 *     onError(frame) {},        // {type: "error", code, detail, job?}
 *     onWatching(states) {},    // answer to watchMine()
 *   });
 *   client.subscribe(jobId); client.cancel(jobId); client.start("demo.timer", {steps: 5});
 *
 * The URL is derived from the page's own location (wss behind https). It
 * reconnects with backoff and resubscribes with `after`, so no state is missed
 * and none goes backwards.
 */
(function (global) {
  "use strict";

  const defaults = {
    path: "/ws/progress/",
    minDelay: 500,
    maxDelay: 10000,
    onJob() {},
    onError() {},
    onWatching() {},
    onOpen() {},
    onClose() {},
  };

  class LiveProgress {
    constructor(options) {
      this.options = Object.assign({}, defaults, options || {});
      this.jobs = new Map(); // id -> newest state
      this.subscribed = new Set();
      this.watchingMine = false;
      this.queue = [];
      this.delay = this.options.minDelay;
      this.connect();
    }

    url() {
      const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + global.location.host + this.options.path;
    }

    connect() {
      const socket = new WebSocket(this.url());
      this.socket = socket;
      socket.onopen = () => {
        this.delay = this.options.minDelay;
        for (const id of this.subscribed) {
          const known = this.jobs.get(id);
          this.sendNow({action: "subscribe", job: id, after: known ? known.seq : undefined});
        }
        if (this.watchingMine) this.sendNow({action: "watch_mine"});
        const waiting = this.queue;
        this.queue = [];
        for (const frame of waiting) this.sendNow(frame);
        this.options.onOpen();
      };
      socket.onmessage = (event) => this.receive(JSON.parse(event.data));
      socket.onclose = () => {
        this.options.onClose();
        const delay = this.delay;
        this.delay = Math.min(this.delay * 2, this.options.maxDelay);
        setTimeout(() => this.connect(), delay * (0.75 + Math.random() / 2));
      };
    }

    receive(frame) {
      if (frame.type === "job") this.keep(frame.job);
      else if (frame.type === "watching") {
        frame.jobs.forEach((state) => this.keep(state));
        this.options.onWatching(frame.jobs);
      } else if (frame.type === "error") this.options.onError(frame);
    }

    keep(state) {
      const known = this.jobs.get(state.id);
      if (known && known.seq >= state.seq) return; // a duplicate or an older state
      this.jobs.set(state.id, state);
      this.options.onJob(state);
    }

    send(frame) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.sendNow(frame);
      else this.queue.push(frame);
    }

    sendNow(frame) {
      this.socket.send(JSON.stringify(frame));
    }

    subscribe(id) {
      this.subscribed.add(id);
      const known = this.jobs.get(id);
      this.send({action: "subscribe", job: id, after: known ? known.seq : undefined});
    }

    unsubscribe(id) {
      this.subscribed.delete(id);
      this.send({action: "unsubscribe", job: id});
    }

    cancel(id) {
      this.send({action: "cancel", job: id});
    }

    start(kind, params) {
      this.send({action: "start", kind: kind, params: params || {}});
    }

    watchMine() {
      this.watchingMine = true;
      this.send({action: "watch_mine"});
    }
  }

  LiveProgress.TERMINAL = ["succeeded", "failed", "cancelled", "interrupted"];
  global.LiveProgress = LiveProgress;
})(window);
