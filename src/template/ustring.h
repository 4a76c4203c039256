// Python str semantics over UTF-8: templates index, slice, measure and strip strings by code
// point. Bytes that are not valid UTF-8 count as one code point each (never read past the end).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace maas::tmpl::detail {

std::vector<uint32_t> decode_utf8(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(const std::vector<uint32_t>& cps, size_t begin, size_t end);
size_t utf8_length(std::string_view s);

bool py_isspace(uint32_t cp);       // str.isspace() / str.split() whitespace
bool py_is_linebreak(uint32_t cp);  // str.splitlines() boundaries
uint32_t py_upper(uint32_t cp);
uint32_t py_lower(uint32_t cp);
bool py_isalpha(uint32_t cp);
bool py_isalnum(uint32_t cp);

std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_title(std::string_view s);  // str.title()
std::vector<std::string> py_split(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl,
                       int64_t count);
// Code point index of the first occurrence at or after code point `start`, or -1.
int64_t py_find(std::string_view s, std::string_view sub, bool reverse);

}  // namespace maas::tmpl::detail
