/*
 * The page a share link opens (/shared/<token>/): one job's bar, live and
 * read-only, through the link: Server-Sent Events, else polling (a WebSocket's
 * jobs are its session's, and the visitor has none). When the link is revoked
 * or expires, the feed ends and the page says so.
 */
(function () {
  "use strict";
  const element = document.querySelector("#lp-shared .lp-job");
  const endedNotice = document.querySelector(".lp-shared-ended");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const apiPath = JSON.parse(document.getElementById("lp-shared-api").textContent);
  const initial = JSON.parse(document.getElementById("lp-shared-state").textContent);
  const bar = new LiveProgress.Bar(element, {titles: titles});
  const status = document.querySelector("[data-lp-connection]");
  const connection = LiveProgress.indicator(status);

  function show(state) {
    bar.update(state);
    // Why it failed is its owner's to know (the reason may quote their data).
    if (state.status === "failed") bar.parts.outcome.textContent = gettext("Failed.");
    LiveProgress.notifyTitle(state);
  }

  let ended = false;
  const client = new LiveProgress(
    Object.assign({}, connection, {
      apiPath: apiPath,
      transports: ["sse", "polling"],
      onJob: show,
      onClose() {
        if (!ended) connection.onClose();
      },
      onError(frame) {
        // The stream's grant (the link) ended, or the link answers 404 now.
        if (frame.code === "session_ended" || frame.code === "not_found") {
          ended = true;
          client.close();
          endedNotice.hidden = false;
          if (status) {
            status.dataset.state = "down";
            status.textContent = gettext("Not live any more");
          }
        }
      },
    })
  );
  client.keep(initial);
  if (!LiveProgress.TERMINAL.includes(initial.status)) client.subscribe(initial.id);
})();
