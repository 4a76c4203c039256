// API-key secrets and their digests (OpenSSL). Internal to the platform layer; the header keeps
// OpenSSL out of its includes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace maas::platform::keys {

inline constexpr std::string_view kSecretPrefix = "sk-maas-";
inline constexpr std::size_t kSecretBytes = 32;
// base64url without padding of 32 bytes: ceil(32 * 8 / 6) characters.
inline constexpr std::size_t kSecretBodyChars = 43;

using Digest = std::array<std::uint8_t, 32>;

// kSecretPrefix + base64url(32 bytes from RAND_bytes). Throws StoreError if the RNG fails.
std::string generate_secret();
// "key_" + 12 lowercase hex chars (6 random bytes).
std::string generate_key_id();
// Whether text has the shape of a secret (prefix, length, alphabet): rejects junk cheaply.
bool looks_like_secret(std::string_view text);

Digest sha256(std::string_view data);
std::string to_hex(const std::uint8_t* data, std::size_t size);
inline std::string to_hex(const Digest& d) { return to_hex(d.data(), d.size()); }
// Parses 64 hex chars; false if malformed.
bool digest_from_hex(std::string_view hex, Digest& out);
// Constant-time comparison (CRYPTO_memcmp).
bool digests_equal(const Digest& a, const Digest& b);

std::string base64url_encode(const std::uint8_t* data, std::size_t size);

}  // namespace maas::platform::keys
