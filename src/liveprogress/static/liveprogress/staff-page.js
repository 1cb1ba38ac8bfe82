/*
 * The staff view (/jobs/staff/): every job its filters select, live. One event
 * stream (/api/jobs/staff/events/ with the page's filters) sends "staff_jobs"
 * rows (with owner and who cancelled) and "job" states of the rows shown; rows of
 * new jobs are added as they come. Cancel posts to the staff cancel endpoint.
 * The stream ends with "session_ended" when the session does: the page says so
 * and stops.
 */
(function () {
  "use strict";
  const table = document.getElementById("lp-staff");
  const body = table.tBodies[0];
  const template = document.getElementById("lp-staff-row");
  const empty = document.querySelector(".lp-empty");
  const notice = document.querySelector(".lp-staff-notice");
  const connection = document.querySelector("[data-lp-connection]");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const gettext = (text) => (window.gettext ? window.gettext(text) : text);
  const TERMINAL = ["succeeded", "failed", "cancelled", "interrupted"];
  const STATUS = {
    queued: "Queued",
    running: "Running",
    succeeded: "Succeeded",
    failed: "Failed",
    cancelled: "Cancelled",
    interrupted: "Interrupted",
  };

  function cookie(name) {
    const found = document.cookie.split("; ").find((item) => item.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  function setTime(cell, epoch, prefix) {
    cell.textContent = prefix || "";
    if (epoch === null || epoch === undefined) return;
    const time = document.createElement("time");
    const date = new Date(epoch * 1000);
    time.dateTime = date.toISOString();
    time.dataset.epoch = epoch;
    time.textContent = date.toLocaleString(document.documentElement.lang);
    cell.append(time);
  }

  function rowOf(id) {
    return body.querySelector('tr[data-job="' + CSS.escape(id) + '"]');
  }

  // Newest first: before the first row created earlier.
  function addRow(state) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.job = state.id;
    row.dataset.seq = "-1";
    row.dataset.created = state.created_at;
    const later = Array.from(body.rows).find((other) => Number(other.dataset.created) < state.created_at);
    body.insertBefore(row, later || null);
    const title = titles[state.kind] || state.kind;
    row.querySelector(".lp-staff-kind").textContent = title;
    const hidden = row.querySelector(".lp-staff-cancel .lp-sr-only");
    if (hidden) hidden.textContent = " " + title;
    setTime(row.querySelector(".lp-staff-created"), state.created_at);
    table.hidden = false;
    empty.hidden = true;
    return row;
  }

  function showState(row, state) {
    if (Number(row.dataset.seq) >= state.seq) return; // an older state, or one held
    row.dataset.seq = state.seq;
    row.dataset.status = state.status;
    row.querySelector(".lp-staff-status").textContent = gettext(STATUS[state.status] || state.status);
    row.querySelector(".lp-staff-progress").textContent = state.percent === null ? "" : state.progress + "%";
    row.querySelector(".lp-staff-message").textContent = state.message;
    const button = row.querySelector(".lp-staff-cancel");
    if (button) button.hidden = TERMINAL.includes(state.status);
  }

  function showRow(entry) {
    const row = rowOf(entry.job.id) || addRow(entry.job);
    row.querySelector(".lp-staff-owner").textContent = entry.owner;
    if (entry.cancelled_by) setTime(row.querySelector(".lp-staff-cancelled"), entry.cancelled_at, entry.cancelled_by + " ");
    showState(row, entry.job);
  }

  // The rows the server rendered: their times in the reader's own words.
  for (const row of body.rows) {
    const created = row.querySelector(".lp-staff-created time");
    row.dataset.created = created ? created.dataset.epoch : "0";
    for (const time of row.querySelectorAll("time[data-epoch]")) {
      time.textContent = new Date(Number(time.dataset.epoch) * 1000).toLocaleString(document.documentElement.lang);
    }
  }

  body.addEventListener("click", (event) => {
    const button = event.target.closest(".lp-staff-cancel");
    if (!button) return;
    const id = button.closest("tr").dataset.job;
    button.disabled = true;
    const url = table.dataset.cancelUrl.replace("00000000-0000-0000-0000-000000000000", encodeURIComponent(id));
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {Accept: "application/json", "X-CSRFToken": cookie("csrftoken")},
    })
      .then((response) => response.json().then((data) => ({ok: response.ok, data: data})))
      .then(({ok, data}) => {
        if (ok) showRow(data);
        else notice.textContent = data.detail;
      })
      .catch((error) => (notice.textContent = String(error)))
      .finally(() => (button.disabled = false));
  });

  const url = table.dataset.eventsUrl;
  if (!url || typeof EventSource !== "function") return;
  const source = new EventSource(url);
  const say = (text, state) => {
    connection.textContent = text;
    connection.dataset.state = state;
  };
  source.addEventListener("staff_jobs", (event) => JSON.parse(event.data).jobs.forEach(showRow));
  source.addEventListener("job", (event) => {
    const state = JSON.parse(event.data).job;
    const row = rowOf(state.id);
    if (row) showState(row, state);
  });
  source.addEventListener("session_ended", () => {
    source.close();
    say(gettext("Signed out"), "down");
    notice.textContent = gettext("Your session has ended: sign in again to go on watching.");
    body.querySelectorAll(".lp-staff-cancel").forEach((button) => (button.disabled = true));
  });
  source.onopen = () => say(gettext("Live (Server-Sent Events)"), "live");
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) say(gettext("Reconnecting…"), "down");
    else say(gettext("Signed out"), "down");
  };
})();
