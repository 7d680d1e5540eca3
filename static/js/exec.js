// Run a command in an instance and show its output as it comes (a streamed response; the last
// record, after an ASCII record separator, is the result as JSON).
(function () {
  "use strict";
  const SEP = "\x1e";

  function setup(form) {
    const section = form.closest("section");
    const out = section.querySelector("[data-exec-output]");
    const status = section.querySelector("[data-exec-status]");
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;

    async function run(body) {
      out.textContent = "";
      status.textContent = "Running…";
      out.dataset.state = "running";
      // On the app page a select chooses the instance; on the instance page it is the form's own.
      const target = form.querySelector("select[data-exec-target]");
      const response = await fetch(target ? target.value : form.action, {
        method: "POST",
        body: body,
        headers: { "X-CSRFToken": token },
        credentials: "same-origin",
      });
      if (!response.ok) {
        let text = "HTTP " + response.status;
        try {
          const problem = await response.json();
          text = Object.entries(problem.errors).map(([k, v]) => (k === "detail" || k === "__all__" ? "" : k + ": ") + v.join(" ")).join("\n");
        } catch (e) { /* not JSON */ }
        status.textContent = "Refused.";
        out.textContent = text;
        out.dataset.state = "refused";
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
        const cut = text.lastIndexOf(SEP);
        out.textContent = cut >= 0 ? text.slice(0, cut) : text;
      }
      const cut = text.lastIndexOf(SEP);
      let result = {};
      try { result = JSON.parse(text.slice(cut + 1)); } catch (e) { result = { error: "no result" }; }
      out.dataset.state = "done";
      out.dataset.exitCode = String(result.exit_code);
      // Panels that list commands (the page's recent commands) refresh themselves.
      document.body.dispatchEvent(new CustomEvent("exec-done"));
      status.textContent = result.error && result.exit_code == null
        ? "Failed: " + result.error
        : "Exit code " + result.exit_code + (result.timed_out ? " (killed after its timeout)" : "") +
          (result.duration != null ? " · " + result.duration.toFixed(2) + " s" : "") +
          (result.truncated ? " · output cut" : "");
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(new FormData(form));
    });
    for (const button of section.querySelectorAll("[data-named]")) {
      button.addEventListener("click", () => {
        const body = new FormData();
        body.append("name", button.dataset.named);
        const timeout = form.querySelector("input[name=timeout]");
        if (timeout) body.append("timeout", timeout.value);
        run(body);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("form[data-exec]").forEach(setup));
})();
