// The official OpenAI SDK against a running `maas serve` of stories260K (model id "stories").
// Usage: node openai_sdk_test.mjs BASE_URL API_KEY REFERENCE_TEXT_FILE
// Every endpoint, streaming and not; the greedy text is checked against the stories260K README
// reference; exits non-zero on the first failed check.
import assert from "node:assert/strict";
import fs from "node:fs";
import OpenAI from "openai";

const [baseURL, apiKey, referencePath] = process.argv.slice(2);
const reference = fs.readFileSync(referencePath, "utf8");  // "Once upon a time, there was ..."
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const model = "stories";
const continuation = reference.slice("Once upon a time".length);

function checkUsage(u, { cached } = {}) {
  assert.equal(typeof u.prompt_tokens, "number");
  assert.equal(typeof u.completion_tokens, "number");
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
  if (cached !== undefined) assert.equal(u.prompt_tokens_details.cached_tokens, cached);
}

// Models.
const list = await client.models.list();
assert.deepEqual(list.data.map((m) => m.id), [model]);
assert.equal(list.data[0].object, "model");
const one = await client.models.retrieve(model);
assert.equal(one.id, model);
await assert.rejects(client.models.retrieve("nope"), OpenAI.NotFoundError);

// Chat, not streamed, greedy: a base model without a chat template gets the message text.
const chat = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Once upon a time" }],
  temperature: 0,
  max_tokens: 30,
});
assert.equal(chat.object, "chat.completion");
assert.equal(chat.choices.length, 1);
assert.equal(chat.choices[0].message.role, "assistant");
assert.ok(continuation.startsWith(chat.choices[0].message.content),
          `chat text ${JSON.stringify(chat.choices[0].message.content)} is not the reference`);
assert.ok(chat.choices[0].message.content.length > 50);
assert.equal(chat.choices[0].finish_reason, "length");
assert.equal(chat.usage.completion_tokens, 30);
checkUsage(chat.usage);

// Chat, streamed, with usage in the final chunk; the deltas add up to the unstreamed text.
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Once upon a time" }],
  temperature: 0,
  max_tokens: 30,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  assert.equal(chunk.object, "chat.completion.chunk");
  if (chunk.usage) {
    assert.equal(chunk.choices.length, 0);
    usage = chunk.usage;
    continue;
  }
  const c = chunk.choices[0];
  streamed += c.delta.content ?? "";
  if (c.finish_reason) finish = c.finish_reason;
}
assert.equal(streamed, chat.choices[0].message.content);
assert.equal(finish, "length");
assert.ok(chunks > 10, "the answer arrived in pieces");
checkUsage(usage);
assert.equal(usage.completion_tokens, 30);
// The same prompt again: its full blocks come from the prefix cache.
assert.ok(usage.prompt_tokens_details.cached_tokens >= 0);

// Stop strings, logprobs, n > 1 with a seed.
const stopped = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Once upon a time" }],
  temperature: 0,
  max_tokens: 60,
  stop: ["Lily"],
  logprobs: true,
  top_logprobs: 3,
});
assert.equal(stopped.choices[0].message.content, continuation.slice(0, continuation.indexOf("Lily")));
assert.equal(stopped.choices[0].finish_reason, "stop");
const lp = stopped.choices[0].logprobs.content;
assert.ok(lp.length > 0);
for (const t of lp) {
  assert.ok(t.logprob <= 0);
  assert.equal(t.top_logprobs.length, 3);
  assert.equal(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob, true);
  assert.ok(Array.isArray(t.bytes));
  // Greedy: the chosen token is the most likely one.
  assert.equal(t.token, t.top_logprobs[0].token);
}
const multi = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "One day" }],
  n: 3,
  seed: 42,
  temperature: 1,
  max_tokens: 20,
});
assert.equal(multi.choices.length, 3);
assert.deepEqual(multi.choices.map((c) => c.index), [0, 1, 2]);
const again = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "One day" }],
  n: 3,
  seed: 42,
  temperature: 1,
  max_tokens: 20,
});
assert.deepEqual(again.choices.map((c) => c.message.content), multi.choices.map((c) => c.message.content));
assert.ok(new Set(multi.choices.map((c) => c.message.content)).size > 1);

// Completions: text, batch, echo with logprobs, streamed.
const comp = await client.completions.create({
  model,
  prompt: "Once upon a time",
  temperature: 0,
  max_tokens: 20,
});
assert.equal(comp.object, "text_completion");
assert.ok(continuation.startsWith(comp.choices[0].text));
checkUsage(comp.usage);
const batch = await client.completions.create({
  model,
  prompt: ["Once upon a time", "Once upon a time"],
  temperature: 0,
  max_tokens: 10,
});
assert.equal(batch.choices.length, 2);
assert.equal(batch.choices[0].text, batch.choices[1].text);
const echoed = await client.completions.create({
  model,
  prompt: "Once upon a time",
  temperature: 0,
  max_tokens: 5,
  echo: true,
  logprobs: 2,
});
assert.ok(echoed.choices[0].text.startsWith("Once upon a time"));
const elp = echoed.choices[0].logprobs;
assert.equal(elp.tokens.length, elp.token_logprobs.length);
assert.equal(elp.token_logprobs[0], null);
// The pieces spell the text (SentencePiece's leading space aside; BOS is an empty piece).
assert.equal(elp.tokens.join("").trimStart(), echoed.choices[0].text);
const cstream = await client.completions.create({
  model,
  prompt: "Once upon a time",
  temperature: 0,
  max_tokens: 20,
  stream: true,
  stream_options: { include_usage: true },
});
let ctext = "";
let cusage = null;
for await (const chunk of cstream) {
  if (chunk.usage) cusage = chunk.usage;
  for (const c of chunk.choices) ctext += c.text;
}
assert.equal(ctext, comp.choices[0].text);
checkUsage(cusage);
await assert.rejects(
  client.completions.create({ model, prompt: "x", suffix: "y", max_tokens: 3 }),
  OpenAI.BadRequestError);

// Embeddings: the SDK asks for base64 and decodes; floats on request. Unit length.
const emb = await client.embeddings.create({ model, input: ["Once upon a time", "The cat"] });
assert.equal(emb.data.length, 2);
const emb2 = await client.embeddings.create({ model, input: "The cat", encoding_format: "float" });
assert.equal(emb.data[1].embedding.length, emb2.data[0].embedding.length);
let norm = 0;
for (let i = 0; i < emb2.data[0].embedding.length; i++) {
  norm += emb2.data[0].embedding[i] ** 2;
  assert.ok(Math.abs(emb.data[1].embedding[i] - emb2.data[0].embedding[i]) < 1e-6);
}
assert.ok(Math.abs(norm - 1) < 1e-4);
checkUsage({ ...emb.usage, completion_tokens: 0 });

// Errors: wrong types are 400s, a wrong key is a 401.
await assert.rejects(
  client.chat.completions.create({ model, messages: "hello" }), OpenAI.BadRequestError);
await assert.rejects(
  client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], temperature: "hot" }),
  OpenAI.BadRequestError);
const wrongKey = new OpenAI({ baseURL, apiKey: apiKey + "x", maxRetries: 0 });
await assert.rejects(wrongKey.models.list(), OpenAI.AuthenticationError);
console.log("openai sdk: all checks passed");
