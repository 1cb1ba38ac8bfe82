/*
 * The /jobs/ page: every job of yours, newest first, each bar live. Jobs you
 * start elsewhere (another tab, the API, the command line) appear as they start.
 */
(function () {
  "use strict";
  const list = document.getElementById("lp-jobs");
  const empty = document.querySelector(".lp-empty");
  const template = document.getElementById("lp-job-template");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);

  function addRow(state) {
    const element = template.content.firstElementChild.cloneNode(true);
    element.dataset.lpJob = state.id;
    element.dataset.status = state.status;
    element.dataset.created = state.created_at;
    // Newest first: before the first row that was created earlier.
    const later = Array.from(list.children).find((row) => Number(row.dataset.created || Infinity) < state.created_at);
    list.insertBefore(element, later || null);
    empty.hidden = true;
    view.add(element).update(state);
  }

  const view = LiveProgress.wire(
    list,
    Object.assign(LiveProgress.indicator(document.querySelector("[data-lp-connection]")), {
      titles: titles,
      onJob(state, bar) {
        if (!bar) addRow(state);
        else bar.element.dataset.created = state.created_at;
        LiveProgress.notifyTitle(state);
      },
    })
  );
  view.client.watchMine();
})();
