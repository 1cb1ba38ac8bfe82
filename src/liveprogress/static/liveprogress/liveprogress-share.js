/*
 * liveprogress-share.js: a Share button on every job bar of the page, for the
 * job's owner. `{% liveprogress_share_assets %}` loads it (with its settings,
 * #lp-share-config) where the site turned SHARE_LINKS on; load it after
 * liveprogress-client.js.
 *
 * The button opens a panel: how long the link works, "Make a link" (POST
 * /api/jobs/<id>/shares/), the new link to copy (shown this once: the server
 * keeps only its digest), and the job's live links, each with Revoke (POST
 * /api/jobs/<id>/shares/<share id>/revoke/). Whoever opens a link watches the job
 * live, read-only.
 *
 * Bars are found by [data-lp-job] as they appear or change job (the /jobs/ page's
 * new rows, a page's one bar showing the next job), so a page needs no code of its
 * own. LiveProgress.sharePanel(element) adds the panel to one bar by hand.
 */
(function (global) {
  "use strict";

  const LiveProgress = global.LiveProgress;
  if (typeof LiveProgress !== "function") {
    throw new Error("liveprogress-share.js needs liveprogress-client.js, loaded before it");
  }
  const gettext = (text) => (global.gettext ? global.gettext(text) : text);
  const format = (text, values) =>
    global.interpolate ? global.interpolate(text, values, true) : text.replace(/%\((\w+)\)s/g, (m, key) => values[key]);
  const configElement = document.getElementById("lp-share-config");
  const config = configElement ? JSON.parse(configElement.textContent) : {};
  const apiPath = config.api_path || "/api/jobs/";
  // The lifetimes offered: those within the site's maximum, the default chosen.
  const LIFETIMES = [
    [3600, () => gettext("1 hour")],
    [24 * 3600, () => gettext("1 day")],
    [7 * 24 * 3600, () => gettext("7 days")],
  ];
  let panels = 0;

  function cookie(name) {
    const found = document.cookie.split("; ").find((item) => item.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
  }

  function request(method, path, body) {
    const init = {method: method, headers: {Accept: "application/json"}, credentials: "same-origin"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRFToken"] = cookie("csrftoken") || "";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then((response) =>
      response.json().then(
        (data) => {
          if (!response.ok) throw data;
          return data;
        },
        () => {
          throw {detail: response.status + " " + response.statusText};
        }
      )
    );
  }

  // A moment with its date: links live for days.
  function moment(epoch) {
    return new Date(epoch * 1000).toLocaleString(document.documentElement.lang || undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }

  function make(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  // One bar's panel. It follows the bar's job: when the bar shows another job, the
  // panel starts again, closed.
  class SharePanel {
    constructor(element) {
      this.element = element;
      this.job = null;
      const id = "lp-share-" + ++panels;
      this.root = make("div", "lp-share");
      this.toggle = make("button", "lp-share-toggle", gettext("Share"));
      this.toggle.type = "button";
      this.toggle.setAttribute("aria-expanded", "false");
      this.toggle.setAttribute("aria-controls", id);
      this.toggleName = make("span", "lp-sr-only");
      this.toggle.append(this.toggleName);
      this.panel = make("div", "lp-share-panel");
      this.panel.id = id;
      this.panel.hidden = true;
      this.panel.setAttribute("role", "group");
      const help = make(
        "p",
        "lp-share-help",
        gettext("Anyone with the link can watch this job live, without signing in. They can't cancel it, and they don't see its result, files or log.")
      );
      const lifetimeLabel = make("label", "", gettext("The link works for") + " ");
      this.lifetime = make("select", "lp-share-lifetime");
      const most = config.max_lifetime || Infinity;
      const offered = LIFETIMES.filter(([seconds]) => seconds <= most);
      if (!offered.length) offered.push([Math.floor(most), () => format(gettext("%(seconds)s seconds"), {seconds: Math.floor(most)})]);
      for (const [seconds, label] of offered) {
        const option = make("option", "", label());
        option.value = String(seconds);
        this.lifetime.append(option);
      }
      const fitting = offered.filter(([seconds]) => seconds <= (config.lifetime || 24 * 3600));
      this.lifetime.value = String((fitting.length ? fitting[fitting.length - 1] : offered[0])[0]);
      lifetimeLabel.append(this.lifetime);
      this.makeButton = make("button", "lp-share-make", gettext("Make a link"));
      this.makeButton.type = "button";
      this.fresh = make("p", "lp-share-new");
      this.fresh.hidden = true;
      const urlLabel = make("label", "", gettext("New link (shown only now)") + " ");
      this.url = make("input", "lp-share-url");
      this.url.type = "text";
      this.url.readOnly = true;
      urlLabel.append(this.url);
      this.copyButton = make("button", "lp-share-copy", gettext("Copy"));
      this.copyButton.type = "button";
      this.fresh.append(urlLabel, " ", this.copyButton);
      this.status = make("p", "lp-share-status");
      this.status.setAttribute("role", "status");
      this.status.setAttribute("aria-live", "polite");
      this.listHeading = make("p", "lp-share-heading", gettext("Links that work now:"));
      this.list = make("ul", "lp-share-list");
      this.list.setAttribute("aria-label", gettext("Links that work now"));
      this.panel.append(help, lifetimeLabel, " ", this.makeButton, this.fresh, this.status, this.listHeading, this.list);
      this.root.append(this.toggle, this.panel);
      element.append(this.root);

      this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
      this.makeButton.addEventListener("click", () => this.create());
      this.copyButton.addEventListener("click", () => this.copy());
      this.sync();
    }

    title() {
      const title = this.element.querySelector(".lp-title");
      return title ? title.textContent : "";
    }

    // The bar's job now: a new one resets the panel.
    sync() {
      const job = this.element.dataset.lpJob || null;
      this.root.hidden = !job;
      if (job === this.job) return;
      this.job = job;
      this.setOpen(false);
      this.fresh.hidden = true;
      this.url.value = "";
      this.status.textContent = "";
      this.list.replaceChildren();
      this.listHeading.hidden = true;
    }

    base() {
      return apiPath + encodeURIComponent(this.job) + "/shares/";
    }

    setOpen(open) {
      this.panel.hidden = !open;
      this.toggle.setAttribute("aria-expanded", String(open));
      const title = this.title();
      this.toggleName.textContent = title ? " " + title : "";
      this.panel.setAttribute("aria-label", format(gettext("Share links: %(title)s"), {title: title}));
      if (open) this.load();
    }

    failed(error) {
      this.status.textContent = (error && error.detail) || String(error);
    }

    load() {
      const job = this.job;
      return request("GET", this.base()).then((body) => {
        if (job === this.job) this.show(body.shares);
      }, (error) => this.failed(error));
    }

    show(links) {
      this.listHeading.hidden = !links.length;
      this.list.replaceChildren(
        ...links.map((link) => {
          const item = make(
            "li",
            "",
            format(gettext("Made %(made)s, works until %(until)s"), {made: moment(link.created_at), until: moment(link.expires_at)}) + " "
          );
          item.dataset.share = link.id;
          const revoke = make("button", "lp-share-revoke", gettext("Revoke"));
          revoke.type = "button";
          revoke.append(make("span", "lp-sr-only", " " + format(gettext("the link made %(made)s"), {made: moment(link.created_at)})));
          revoke.addEventListener("click", () => this.revoke(link.id, revoke));
          item.append(revoke);
          return item;
        })
      );
    }

    create() {
      const job = this.job;
      this.makeButton.disabled = true;
      request("POST", this.base(), {lifetime: Number(this.lifetime.value)}).then(
        (link) => {
          this.makeButton.disabled = false;
          if (job !== this.job) return;
          this.url.value = link.url;
          this.fresh.hidden = false;
          this.url.focus();
          this.url.select();
          this.status.textContent = format(gettext("Link made: it works until %(until)s. Copy it now: it can't be shown again."), {until: moment(link.expires_at)});
          this.load();
        },
        (error) => {
          this.makeButton.disabled = false;
          this.failed(error);
        }
      );
    }

    copy() {
      const done = () => (this.status.textContent = gettext("Link copied."));
      this.url.select();
      if (global.navigator.clipboard && global.isSecureContext) {
        global.navigator.clipboard.writeText(this.url.value).then(done, () => this.copyByCommand(done));
      } else this.copyByCommand(done);
    }

    copyByCommand(done) {
      this.url.select();
      try {
        if (document.execCommand("copy")) {
          done();
          return;
        }
      } catch (error) {
        // Refused: the visitor copies the selected text.
      }
      this.status.textContent = gettext("Select the link and copy it.");
    }

    revoke(shareId, button) {
      button.disabled = true;
      const path = this.base() + encodeURIComponent(shareId) + "/revoke/";
      request("POST", path, {}).then(
        () => {
          this.status.textContent = gettext("Link revoked: it no longer works.");
          this.load();
        },
        (error) => {
          button.disabled = false;
          this.failed(error);
        }
      );
    }
  }

  const attached = new WeakMap();

  function sharePanel(element) {
    let panel = attached.get(element);
    if (!panel) {
      panel = new SharePanel(element);
      attached.set(element, panel);
    } else panel.sync();
    return panel;
  }

  function scan(root) {
    if (root.matches && root.matches(".lp-job")) sharePanel(root);
    if (root.querySelectorAll) root.querySelectorAll(".lp-job").forEach(sharePanel);
  }

  LiveProgress.sharePanel = sharePanel;

  const start = () => {
    scan(document);
    new MutationObserver((changes) => {
      for (const change of changes) {
        if (change.type === "attributes") {
          if (change.target.matches(".lp-job")) sharePanel(change.target);
        } else change.addedNodes.forEach(scan);
      }
    }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-lp-job"]});
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window);
