/*
 * The /progress/ page: the original example's timed process, grown up.
 * On load it resumes your running timed process, or starts one; Cancel while it
 * runs, Run again (with the form's steps and interval) when it has ended.
 */
(function () {
  "use strict";
  const card = document.getElementById("lp-demo");
  const kind = card.dataset.kind;
  const form = document.getElementById("lp-demo-form");
  const againButton = form.querySelector(".lp-again");
  const startButton = form.querySelector(".lp-start");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const bar = new LiveProgress.Bar(card.querySelector(".lp-job"), {titles: titles});
  const isActive = (state) => !LiveProgress.TERMINAL.includes(state.status);
  let current = null; // the id of the job this page shows
  let starting = false; // a start is on its way; its first state will be adopted

  function show(state) {
    bar.update(state);
    card.dataset.status = state.status;
    card.dataset.job = state.id;
    againButton.hidden = isActive(state);
    startButton.hidden = !isActive(state);
    LiveProgress.notifyTitle(state);
  }

  function adopt(state) {
    current = state.id;
    starting = false;
    client.subscribe(state.id);
    show(state);
  }

  function params() {
    const values = {};
    for (const input of form.querySelectorAll("input[name]")) {
      const number = Number(input.value);
      values[input.name] = input.value === "" || Number.isNaN(number) ? input.value : number;
    }
    return values;
  }

  function start() {
    starting = true;
    client.start(kind, params());
  }

  const client = new LiveProgress(
    Object.assign(LiveProgress.indicator(document.querySelector("[data-lp-connection]")), {
      onWatching(states) {
        if (current || starting) return;
        const running = states.find((s) => s.kind === kind && isActive(s));
        if (running) adopt(running);
        else start();
      },
      onJob(state) {
        if (state.id === current) show(state);
        else if (starting && state.kind === kind && isActive(state)) adopt(state);
      },
      onError(frame) {
        // The form's and the server's refusals show in the card, not as a dead page.
        starting = false;
        bar.parts.outcome.textContent = frame.detail;
      },
    })
  );
  client.watchMine();
  bar.parts.cancel.addEventListener("click", () => {
    if (current) client.cancel(current);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
})();
