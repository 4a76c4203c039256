// Reference tokenization with Hugging Face tokenizers (@anush008/tokenizers, native bindings).
// Usage: node encode.js TOKENIZER_JSON [--plain-special] < strings.json > ids.json
// stdin: a JSON array of strings; stdout: a JSON array with one array of token ids per string.
// Special tokens are never added (addSpecialTokens: false). Hugging Face always matches the text
// of added tokens; with --plain-special the added tokens marked "special" are dropped before
// loading, so text such as "<|im_start|>" is tokenized as ordinary text while non-special added
// tokens still match: the reference for maas's encode(..., parse_special=false). (The special
// entries are renamed to text no test string holds rather than removed, because loading assigns
// added tokens consecutive ids in list order.)
"use strict";
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require(path.join(__dirname, "node_modules", "@anush008", "tokenizers"));

async function main() {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith("--"));
  if (!file) throw new Error("usage: node encode.js TOKENIZER_JSON [--plain-special] < strings.json");
  const json = JSON.parse(fs.readFileSync(file, "utf8"));
  if (args.includes("--plain-special")) {
    for (const t of json.added_tokens || []) {
      if (t.special) t.content = `\u0000unmatchable special token ${t.id}\u0000`;
    }
  }
  const tokenizer = Tokenizer.fromString(JSON.stringify(json));
  const strings = JSON.parse(fs.readFileSync(0, "utf8"));
  if (!Array.isArray(strings)) throw new Error("stdin must be a JSON array of strings");
  const out = [];
  for (const s of strings) {
    const enc = await tokenizer.encode(s, null, { addSpecialTokens: false });
    out.push(enc.getIds());
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
