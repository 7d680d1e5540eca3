// The Node.js example of docs/runtimes.md: / says which instance and which Node it runs on,
// /health answers "ok" for the portal's health check. No dependencies: node_modules would
// come in the release next to this file.
"use strict";
const http = require("http");

const port = Number(process.env.PORT || 8080);
const server = http.createServer((request, response) => {
  if (request.url === "/health") {
    response.writeHead(200, { "Content-Type": "text/plain" });
    response.end("ok\n");
    return;
  }
  response.writeHead(200, { "Content-Type": "text/plain" });
  response.end(`Hello from ${process.env.SLIPWAY_INSTANCE} on Node.js ${process.version}\n`);
});
server.listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
// The portal stops instances with SIGTERM: finish the requests in flight, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
