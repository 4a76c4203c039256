// Opens N streaming completions at once against BASE_URL (default 1000), each on its own
// connection, and checks that every one completes with [DONE]: no refusals, no stalls.
// Usage: node many_streams.mjs BASE_URL MODEL N
import assert from "node:assert/strict";
import http from "node:http";

const [base, model, nArg] = process.argv.slice(2);
const n = Number(nArg ?? 1000);
const url = new URL(`${base}/v1/completions`);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

let open = 0;
let maxOpen = 0;
function one(i) {
  const body = JSON.stringify({ model, prompt: `Story ${i}:`, max_tokens: 8, temperature: 0,
                                ignore_eos: true, stream: true });
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent, timeout: 120000,
                                    headers: { "content-type": "application/json",
                                               "content-length": Buffer.byteLength(body) } },
      (res) => {
        open++;
        maxOpen = Math.max(maxOpen, open);
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => { text += d; });
        res.on("end", () => {
          open--;
          try {
            assert.equal(res.statusCode, 200, `request ${i}: status ${res.statusCode}`);
            assert.ok(text.endsWith("data: [DONE]\n\n"), `request ${i} did not finish`);
            resolve(text.split("data: ").length - 2);
          } catch (e) { reject(e); }
        });
      });
    req.on("timeout", () => req.destroy(new Error(`request ${i} stalled`)));
    req.on("error", reject);
    req.end(body);
  });
}

const t0 = Date.now();
const events = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
const total = events.reduce((a, b) => a + b, 0);
console.log(`streams ${n} completed, ${total} events, at most ${maxOpen} open at once, ` +
            `${Date.now() - t0} ms`);
