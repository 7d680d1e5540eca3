// The logs panel opens at its newest line, as a terminal's tail would, after every refresh.
document.body.addEventListener("htmx:afterSettle", (event) => {
  const panel = document.getElementById("logs-lines");
  if (!panel || !panel.contains(event.target) && event.target !== panel) return;
  const output = panel.querySelector(".log-output");
  if (output) output.scrollTop = output.scrollHeight;
});
