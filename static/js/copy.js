// Copy buttons: <button data-copy="ID"> copies the text of the element with that id (the new API
// token's key). Delegated from the document, so buttons that htmx swaps in work too. The
// clipboard API needs a secure context (https, or 127.0.0.1); elsewhere the text is selected and
// copied the old way.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  const done = () => { button.textContent = "Copied"; };
  const fallback = () => {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (document.execCommand("copy")) done();
    else button.textContent = "Select and copy it";
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, fallback);
  } else {
    fallback();
  }
});
