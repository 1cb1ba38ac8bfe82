/* The /progress/ page: resume your running timed process, or start one. */
(function () {
  "use strict";
  const script = document.currentScript;
  const card = document.getElementById("lp-demo");
  const kind = card.dataset.kind;
  const bar = card.querySelector(".lp-bar");
  const fill = card.querySelector(".lp-bar-fill");
  const message = card.querySelector(".lp-message");
  const percent = card.querySelector(".lp-percent");
  const eta = card.querySelector(".lp-eta");
  const cancelButton = card.querySelector(".lp-cancel");
  const againButton = card.querySelector(".lp-again");
  const etaLabel = script.dataset.etaLabel;
  const statusLabels = JSON.parse(script.dataset.statusLabels);
  let current = null; // the id of the job this page shows
  let starting = false;

  function show(state) {
    const done = LiveProgress.TERMINAL.includes(state.status);
    const value = state.percent === null ? 0 : state.percent;
    card.dataset.status = state.status;
    card.dataset.job = state.id;
    fill.style.width = value + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(value)));
    percent.textContent = state.percent === null ? "" : Math.round(value) + "%";
    eta.textContent = state.eta_s === null || done ? "" : etaLabel.replace("%s", Math.ceil(state.eta_s));
    let text = state.message;
    if (done && state.status !== "succeeded") text = statusLabels[state.status] + (state.error ? ": " + state.error : "");
    message.textContent = text;
    cancelButton.hidden = done;
    againButton.hidden = !done;
  }

  function adopt(state) {
    current = state.id;
    starting = false;
    client.subscribe(state.id);
    show(state);
  }

  const client = new LiveProgress({
    onWatching(states) {
      if (current || starting) return;
      const running = states.find((s) => s.kind === kind && !LiveProgress.TERMINAL.includes(s.status));
      if (running) adopt(running);
      else { starting = true; client.start(kind, {}); }
    },
    onJob(state) {
      if (state.id === current) show(state);
      else if (starting && state.kind === kind && !LiveProgress.TERMINAL.includes(state.status)) adopt(state);
    },
    onError(frame) { message.textContent = frame.detail; starting = false; },
  });
  client.watchMine();
  cancelButton.addEventListener("click", () => { if (current) client.cancel(current); });
  againButton.addEventListener("click", () => { starting = true; current = null; client.start(kind, {}); });
})();
