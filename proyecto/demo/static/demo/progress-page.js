/*
 * The /progress/ page: the original example's timed process, grown up.
 * On load it resumes your running timed process, or starts one; Cancel while it
 * runs, Run again (with the form's steps and interval) when it has ended.
 * When the site has other engines set up (Celery...), the form's "Run it on"
 * choice starts the process on one of them (POST /api/engines/<engine>/) instead
 * of liveprogress's own runner, and the bar follows that job the same way.
 * A signed-in user with an address gets "Email me when it ends": it says (and
 * sets) whether the job shown will email them, and new starts take it along.
 */
(function () {
  "use strict";
  const card = document.getElementById("lp-demo");
  const kind = card.dataset.kind;
  const form = document.getElementById("lp-demo-form");
  const againButton = form.querySelector(".lp-again");
  const startButton = form.querySelector(".lp-start");
  const engineChoice = form.querySelector('select[name="engine"]'); // none: no engine set up
  const engineOptions = engineChoice ? Array.from(engineChoice.options) : [];
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const bar = new LiveProgress.Bar(card.querySelector(".lp-job"), {titles: titles});
  const isActive = (state) => !LiveProgress.TERMINAL.includes(state.status);
  // The timed process's job, on liveprogress's own runner or on an engine.
  const isTimer = (state) =>
    state.kind === kind || engineOptions.some((option) => option.dataset.kind === state.kind);
  let current = null; // the id of the job this page shows
  let starting = null; // the kind of a start on its way; its first state will be adopted
  const emailBox = document.getElementById("lp-demo-email"); // none: not offered here

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
    starting = null;
    client.subscribe(state.id);
    // The choice names where the job shown runs (a reload may resume one on an engine).
    const engine = engineOptions.find((option) => option.dataset.kind === state.kind);
    if (engineChoice) engineChoice.value = engine ? engine.value : "";
    show(client.jobs.get(state.id) || state);
    if (emailBox) {
      const id = state.id;
      const wanted = emailBox.checked && isActive(state) && state.kind !== kind;
      // A job started on an engine (its own start URL takes no notify) is asked now;
      // any other says whether it will email.
      client.notify(id, wanted ? true : undefined).then(
        (answer) => {
          if (id === current) emailBox.checked = answer.email;
        },
        () => {}
      );
    }
  }

  function params() {
    const values = {};
    for (const input of form.querySelectorAll('input[type="number"]')) {
      const number = Number(input.value);
      values[input.name] = input.value === "" || Number.isNaN(number) ? input.value : number;
    }
    return values;
  }

  function refused(frame) {
    // The form's and the server's refusals show in the card, not as a dead page.
    starting = null;
    bar.parts.outcome.textContent = frame.detail;
  }

  function start() {
    const engine = engineChoice ? engineChoice.selectedOptions[0] : null;
    if (!engine || !engine.value) {
      starting = kind;
      client.start(kind, params(), emailBox && emailBox.checked ? {notify: {email: true}} : undefined);
      return;
    }
    starting = engine.dataset.kind;
    client.http("POST", engine.dataset.url, params()).then(
      (state) => {
        client.keep(state);
        if (state.id !== current) adopt(state);
      },
      (error) => refused(error.type === "error" ? error : {detail: String(error)})
    );
  }

  const client = new LiveProgress(
    Object.assign(LiveProgress.indicator(document.querySelector("[data-lp-connection]")), {
      onWatching(states) {
        if (current || starting) return;
        const running = states.find((s) => isTimer(s) && isActive(s));
        if (running) adopt(running);
        else start();
      },
      onJob(state) {
        if (state.id === current) show(state);
        else if (state.kind === starting && isActive(state)) adopt(state);
      },
      onError: refused,
    })
  );
  client.watchMine();
  // The bar's buttons act on the job the page follows.
  for (const action of ["cancel", "pause", "resume"]) {
    const button = bar.parts[action];
    if (button) button.addEventListener("click", () => current && client[action](current));
  }
  if (emailBox) {
    emailBox.addEventListener("change", () => {
      const state = current && client.jobs.get(current);
      // An ended job's notices are decided: the box is then for the next start.
      if (!state || !isActive(state)) return;
      emailBox.disabled = true;
      client.notify(current, emailBox.checked).then(
        (answer) => {
          emailBox.checked = answer.email;
          emailBox.disabled = false;
        },
        (error) => {
          emailBox.checked = !emailBox.checked;
          emailBox.disabled = false;
          refused(error.type === "error" ? error : {detail: String(error)});
        }
      );
    });
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
})();
