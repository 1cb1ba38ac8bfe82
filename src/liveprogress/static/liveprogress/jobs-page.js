/*
 * The /jobs/ page: every job of yours, newest first, each bar live. Jobs you
 * start elsewhere (another tab, the API, the command line) appear as they start.
 * A signed-in user with an email address gets "Email me when it ends" on each
 * job still running (#lp-email: null, or the ids of the jobs that will email).
 */
(function () {
  "use strict";
  const list = document.getElementById("lp-jobs");
  const empty = document.querySelector(".lp-empty");
  const template = document.getElementById("lp-job-template");
  const titles = JSON.parse(document.getElementById("lp-titles").textContent);
  const email = JSON.parse(document.getElementById("lp-email").textContent);

  function emailToggle(element) {
    if (!email) return;
    let label = element.querySelector(".lp-email");
    if (!label) {
      label = document.createElement("label");
      label.className = "lp-email";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = email.jobs.includes(element.dataset.lpJob);
      label.append(box, " " + gettext("Email me when it ends"));
      box.addEventListener("change", () => {
        box.disabled = true;
        view.client.notify(element.dataset.lpJob, box.checked).then(
          (answer) => {
            box.checked = answer.email;
            box.disabled = false;
          },
          (error) => {
            box.checked = !box.checked;
            box.disabled = false;
            element.querySelector(".lp-outcome").textContent = error.detail || String(error);
          }
        );
      });
      element.append(label);
    }
    label.hidden = LiveProgress.TERMINAL.includes(element.dataset.status);
  }

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
    emailToggle(element);
  }

  const view = LiveProgress.wire(
    list,
    Object.assign(LiveProgress.indicator(document.querySelector("[data-lp-connection]")), {
      titles: titles,
      onJob(state, bar) {
        if (!bar) addRow(state);
        else {
          bar.element.dataset.created = state.created_at;
          emailToggle(bar.element);
        }
        LiveProgress.notifyTitle(state);
      },
    })
  );
  view.bars.forEach((bar) => emailToggle(bar.element));
  // A link to one job (an email's): its row, brought into view.
  const linked = location.hash.startsWith("#job-") && view.bars.get(location.hash.slice(5));
  if (linked) {
    linked.element.classList.add("lp-linked");
    linked.element.scrollIntoView({block: "center"});
  }
  view.client.watchMine();
})();
