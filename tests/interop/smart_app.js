// A SMART app built on the npm `fhirclient` library (its Node adapter), driven by
// tests/auth/test_real_clients.py: /launch starts a standalone launch with PKCE (required),
// /callback finishes it and reads the patient and their Observations with the token.
"use strict";
const http = require("http");
const smart = require("fhirclient");

const [, , port, iss, clientId] = process.argv;
const memory = new Map();
const storage = {
  get: async (key) => memory.get(key),
  set: async (key, value) => { memory.set(key, value); return value; },
  unset: async (key) => memory.delete(key),
};

http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://127.0.0.1:${port}`);
    if (url.pathname === "/launch") {
      await smart(req, res, storage).authorize({
        iss, clientId, redirectUri: "/callback", pkceMode: "required",
        scope: "launch/patient patient/*.rs openid fhirUser",
      });
    } else if (url.pathname === "/callback") {
      const client = await smart(req, res, storage).ready();
      const patient = await client.patient.read();
      const bundle = await client.request(`Observation?patient=${client.patient.id}`);
      const body = JSON.stringify({
        patient: patient.id,
        observations: (bundle.entry || []).map((e) => e.resource.id).sort(),
        scope: client.state.tokenResponse.scope,
        fhirUser: (client.getIdToken() || {}).fhirUser || null,
      });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    } else {
      res.writeHead(404);
      res.end();
    }
  } catch (error) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String((error && error.stack) || error));
  }
}).listen(Number(port), "127.0.0.1", () => console.log("ready"));
