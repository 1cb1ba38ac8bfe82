/*
 * The /import/ page: upload a CSV file, then follow its import live: the stages,
 * the log (bad rows), and the cleaned file to download. /import/?job=<id>
 * follows an import already started (a reload, or the form posted without script).
 */
(function () {
  "use strict";
  const form = document.getElementById("lp-upload");
  const errorLine = document.getElementById("lp-upload-error");
  const card = document.getElementById("lp-import");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const bar = new LiveProgress.Bar(card.querySelector(".lp-job"), {titles: titles});
  const log = new LiveProgress.LogView(document.getElementById("lp-import-log"));
  let current = null;

  const client = new LiveProgress(
    Object.assign(LiveProgress.indicator(document.querySelector("[data-lp-connection]")), {
      onJob(state) {
        if (state.id !== current) return;
        bar.update(state);
        card.dataset.status = state.status;
        LiveProgress.notifyTitle(state);
      },
      onLog(id, lines, droppedThrough) {
        if (id === current) log.add(lines, droppedThrough);
      },
      onError(frame) {
        errorLine.textContent = frame.detail;
      },
    })
  );

  // The bar's buttons act on the import the page follows (a paused import goes on
  // from the row it reached).
  for (const action of ["cancel", "pause", "resume"]) {
    const button = bar.parts[action];
    if (button) button.addEventListener("click", () => current && client[action](current));
  }

  function follow(id) {
    if (current) client.unsubscribe(current);
    current = id;
    card.hidden = false;
    card.dataset.job = id;
    log.clear();
    client.subscribe(id, {logs: true});
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errorLine.textContent = "";
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: {Accept: "application/json", "X-CSRFToken": token},
      credentials: "same-origin",
    })
      .then((response) => response.json().then((body) => ({ok: response.ok, body: body})))
      .then(({ok, body}) => {
        if (!ok) throw body;
        client.keep(body);
        follow(body.id);
        bar.update(body);
        history.replaceState(null, "", "?job=" + encodeURIComponent(body.id));
      })
      .catch((error) => {
        errorLine.textContent = (error && error.detail) || String(error);
      });
  });

  const asked = new URLSearchParams(location.search).get("job");
  if (asked) follow(asked);
})();
