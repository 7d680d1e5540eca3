// Tabs over one page's panels (<nav class="tabs"> with <a data-tab="name">, panels with
// data-tab-panel="name"). Without this script every panel shows and the tabs are anchors.
// The tab is kept in the URL's hash, so reloading or sharing the link opens the same tab; a hash
// naming something inside a panel (#delete-app) opens the panel that holds it.
(function () {
  "use strict";

  function activate(nav, name) {
    for (const link of nav.querySelectorAll("[data-tab]:not([data-tab-page])")) {
      const on = link.dataset.tab === name;
      link.setAttribute("aria-selected", String(on));
      link.classList.toggle("active", on);
    }
    for (const panel of document.querySelectorAll("[data-tab-panel]")) panel.hidden = panel.dataset.tabPanel !== name;
    document.dispatchEvent(new CustomEvent("slipway:tab-shown", { detail: name }));
  }

  function wanted(names) {
    const hash = decodeURIComponent(location.hash.slice(1));
    if (names.includes(hash)) return hash;
    const target = hash && document.getElementById(hash);
    const panel = target && target.closest("[data-tab-panel]");
    return panel ? panel.dataset.tabPanel : names[0];
  }

  document.addEventListener("DOMContentLoaded", () => {
    const nav = document.querySelector("nav.tabs");
    if (!nav || !document.querySelector("[data-tab-panel]")) return;
    const names = Array.from(nav.querySelectorAll("[data-tab]:not([data-tab-page])"), (a) => a.dataset.tab);
    nav.addEventListener("click", (event) => {
      const link = event.target.closest("[data-tab]:not([data-tab-page])");
      if (!link) return;
      event.preventDefault();
      history.replaceState(null, "", "#" + link.dataset.tab);
      activate(nav, link.dataset.tab);
    });
    window.addEventListener("hashchange", () => activate(nav, wanted(names)));
    const first = wanted(names);
    activate(nav, first);
    const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && !names.includes(target.id)) target.scrollIntoView();
  });
})();
