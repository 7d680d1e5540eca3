// The browser terminal: xterm.js on a websocket to apps/console/consumers.py. Keystrokes go as
// binary frames, a resize as the text frame {"resize": [cols, rows]}; output comes as binary
// frames, and the last text frame {"end", "exit_code", "code"} says why the session ended.
(function () {
  "use strict";

  function start(box) {
    const status = document.querySelector("[data-terminal-status]");
    const term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      scrollback: 5000,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
      fontSize: 14,
    });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    window.slipwayTerminal = term; // for tests and the browser console

    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + box.dataset.socketPath);
    socket.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    let ended = false;

    function say(text, bad) {
      status.textContent = text;
      status.classList.toggle("terminal-ended", !!bad);
    }

    function finish(text) {
      if (ended) return;
      ended = true;
      term.options.disableStdin = true;
      term.options.cursorBlink = false;
      term.write("\r\n\x1b[1;33m[" + text + "]\x1b[0m\r\n");
      say(text, true);
    }

    function sendSize() {
      if (socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ resize: [term.cols, term.rows] }));
      }
    }

    socket.addEventListener("open", function () {
      say("Connected. The session ends when the shell exits (type exit).", false);
      sendSize();
      term.focus();
    });
    socket.addEventListener("message", function (event) {
      if (typeof event.data === "string") {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        if (message.end) finish("Session ended: " + message.end);
        return;
      }
      term.write(new Uint8Array(event.data));
    });
    socket.addEventListener("close", function (event) {
      finish("Connection closed (code " + event.code + ")" + (event.code === 1006 ? ": refused or lost" : ""));
    });

    term.onData(function (data) {
      if (!ended && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    term.onResize(sendSize);
    let pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        fit.fit();
      }, 100);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.querySelector("[data-terminal]");
    if (box) start(box);
  });
})();
