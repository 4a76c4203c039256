// Fuzz target: both real tokenizers (Llama 2's SentencePiece vocabulary and GPT-2's byte-level
// BPE) on arbitrary bytes, with special-token parsing off and on. Checks that every id is in the
// vocabulary, that decode never fails and gives the input back where it must, and that
// StreamDecoder's output is valid UTF-8 equal to decode's output with U+FFFD substitutions.
//
// The vocabularies come from $MAAS_SHARED_DIR/vocab, else from a "shared" folder next to any
// ancestor of the executable (the repository sits beside shared/); without them, inputs are
// ignored.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

namespace fs = std::filesystem;
using maas::tokenizer::Token;
using maas::tokenizer::Tokenizer;

std::string find_vocab_dir() {
  if (const char* env = std::getenv("MAAS_SHARED_DIR")) {
    if (fs::exists(fs::path(env) / "vocab")) return (fs::path(env) / "vocab").string();
  }
  std::error_code ec;
  fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  if (ec) dir = fs::current_path(ec);
  for (; !dir.empty(); dir = dir.parent_path()) {
    const fs::path candidate = dir / "shared" / "vocab";
    if (fs::exists(candidate / "ggml-vocab-gpt-2.gguf", ec)) return candidate.string();
    if (dir == dir.parent_path()) break;
  }
  return {};
}

std::vector<std::unique_ptr<Tokenizer>> load_tokenizers() {
  std::vector<std::unique_ptr<Tokenizer>> out;
  const std::string dir = find_vocab_dir();
  if (dir.empty()) {
    std::fprintf(stderr, "fuzz_tokenizer: vocabularies not found; inputs are ignored\n");
    return out;
  }
  try {
    for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"}) {
      const maas::gguf::File file = maas::gguf::File::open(dir + "/" + name);
      out.push_back(Tokenizer::from_gguf(file));
    }
  } catch (const std::exception& e) {
    // A broken copy of the shared files is not what this target tests.
    std::fprintf(stderr, "fuzz_tokenizer: cannot load the vocabularies: %s\n", e.what());
    out.clear();
  }
  return out;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::unique_ptr<Tokenizer>> tokenizers = load_tokenizers();
  if (size > (1u << 14)) return 0;  // long inputs only slow the search down
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& tok : tokenizers) {
    for (bool parse_special : {false, true}) {
      const std::vector<Token> ids =
          tok->encode(text, /*add_special=*/!parse_special, parse_special);
      for (Token t : ids) check(t >= 0 && t < tok->n_vocab(), "token id outside the vocabulary");
      const std::string decoded = tok->decode(ids);
      if (!parse_special) {
        // Byte fallback / the byte alphabet keep every byte. SentencePiece's only loss: a literal
        // "▁" in the input reads back as a space.
        const bool lossless = tok->model_name() == "gpt2" || text.find("\xE2\x96\x81") == text.npos;
        if (lossless) check(decoded == text, "decode(encode(text)) != text");
      }
      maas::tokenizer::StreamDecoder stream(*tok);
      std::string streamed;
      for (Token t : ids) {
        const std::string chunk = stream.push(t);
        check(maas::tokenizer::unicode::is_valid(chunk), "stream chunk is not valid UTF-8");
        streamed += chunk;
      }
      streamed += stream.flush();
      std::string expected;
      maas::tokenizer::unicode::append_sanitized(decoded, /*at_end=*/true, expected);
      check(streamed == expected, "StreamDecoder output differs from decode");
      (void)tok->decode(ids, /*render_special=*/true);
    }
  }
  return 0;
}
