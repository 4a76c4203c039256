// UTF-8 helpers and the GPT-2 byte <-> unicode mapping used by byte-level BPE (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace maas::tokenizer::unicode {

// Length (1-4) of the well-formed UTF-8 sequence starting at s[i], or 0 if the bytes there are
// not one (stray continuation byte, overlong form, surrogate, > U+10FFFF, or cut off by the end).
size_t valid_sequence_length(std::string_view s, size_t i);

// True if every byte of s belongs to a well-formed UTF-8 sequence.
bool is_valid(std::string_view s);

// Appends the UTF-8 encoding of code point cp (< 0x110000, not a surrogate) to out.
void append_utf8(uint32_t cp, std::string& out);

// Appends s to out with each ill-formed part replaced by U+FFFD, one replacement per maximal
// subpart (as the Unicode standard recommends, and Python's "replace" error handler does).
// If at_end is false, a trailing incomplete but so far well-formed sequence is not consumed.
// Returns the number of bytes of s consumed.
size_t append_sanitized(std::string_view s, bool at_end, std::string& out);

// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition), as Hugging Face's NFC normalizer applies it (Qwen tokenizers). Ill-formed bytes
// pass through unchanged and block composition across them. Text that is already NFC comes back
// unchanged.
std::string to_nfc(std::string_view s);

// GPT-2's byte-level alphabet: every byte maps to one printable code point; printable Latin-1
// bytes map to themselves, the others to U+0100 onwards in byte order.
uint32_t byte_to_codepoint(uint8_t b);
// The UTF-8 text (one character) a byte maps to.
const std::string& byte_to_utf8(uint8_t b);
// The byte a code point stands for, or -1 if it is not in the alphabet.
int codepoint_to_byte(uint32_t cp);

}  // namespace maas::tokenizer::unicode
