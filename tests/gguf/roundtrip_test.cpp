// Writer -> reader round trips, and the writer's output checked by an independent Python parser.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "support/test_util.h"

namespace maas::gguf {
namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
  return v;
}

// Every scalar type with extreme values, strings, arrays of each type, nested and empty arrays.
std::vector<std::pair<std::string, Value>> all_types() {
  Array inner1{ValueType::UINT16, {uint16_t{1}, uint16_t{2}}};
  Array inner2{ValueType::UINT16, {}};
  Array inner3{ValueType::STRING, {std::string("deep")}};
  Array mid{ValueType::ARRAY, {Value(inner3)}};
  return {
      {"u8", Value(uint8_t{255})},
      {"i8", Value(int8_t{-128})},
      {"u16", Value(uint16_t{65535})},
      {"i16", Value(int16_t{-32768})},
      {"u32", Value(uint32_t{4294967295u})},
      {"i32", Value(std::numeric_limits<int32_t>::min())},
      {"f32", Value(-0.15625f)},
      {"bool_true", Value(true)},
      {"bool_false", Value(false)},
      {"str", Value(std::string("h\xc3\xa9llo\nworld"))},
      {"str_empty", Value(std::string())},
      {"str_nul", Value(std::string("a\0b", 3))},
      {"u64", Value(std::numeric_limits<uint64_t>::max())},
      {"i64", Value(std::numeric_limits<int64_t>::min())},
      {"f64", Value(1e-300)},
      {"f32_nan", Value(std::numeric_limits<float>::quiet_NaN())},
      {"arr_u8", Value(Array{ValueType::UINT8, {uint8_t{0}, uint8_t{255}}})},
      {"arr_i8", Value(Array{ValueType::INT8, {int8_t{-1}}})},
      {"arr_u16", Value(Array{ValueType::UINT16, {uint16_t{1}, uint16_t{65535}}})},
      {"arr_i16", Value(Array{ValueType::INT16, {int16_t{-2}}})},
      {"arr_u32", Value(Array{ValueType::UINT32, {uint32_t{7}}})},
      {"arr_i32", Value::int32s({-1, 0, 1})},
      {"arr_f32", Value::floats({0.5f, -2.25f})},
      {"arr_bool", Value(Array{ValueType::BOOL, {true, false, true}})},
      {"arr_str", Value::strings({"", "x", "\xe2\x96\x81y"})},
      {"arr_u64", Value(Array{ValueType::UINT64, {uint64_t{1} << 40}})},
      {"arr_i64", Value(Array{ValueType::INT64, {int64_t{-(int64_t{1} << 40)}}})},
      {"arr_f64", Value(Array{ValueType::FLOAT64, {0.1, -0.0}})},
      {"arr_empty", Value(Array{ValueType::FLOAT32, {}})},
      {"arr_nested", Value(Array{ValueType::ARRAY, {Value(inner1), Value(inner2)}})},
      {"arr_nested3",
       Value(Array{ValueType::ARRAY, {Value(mid), Value(Array{ValueType::ARRAY, {}})}})},
  };
}

Writer all_types_writer() {
  Writer w;
  for (const auto& [key, value] : all_types()) w.set(key, value);
  return w;
}

bool same_value(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  if (a.type() == ValueType::ARRAY) {
    const Array& x = a.as_array();
    const Array& y = b.as_array();
    if (x.elem_type != y.elem_type || x.items.size() != y.items.size()) return false;
    for (size_t i = 0; i < x.items.size(); ++i) {
      if (!same_value(x.items[i], y.items[i])) return false;
    }
    return true;
  }
  if (a.type() == ValueType::FLOAT32) {  // bitwise, so NaN and -0 count
    float fa = std::get<float>(a.v), fb = std::get<float>(b.v);
    return std::memcmp(&fa, &fb, 4) == 0;
  }
  if (a.type() == ValueType::FLOAT64) {
    double da = std::get<double>(a.v), db = std::get<double>(b.v);
    return std::memcmp(&da, &db, 8) == 0;
  }
  return std::visit(
      [&b](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Array>) {
          return false;  // handled above
        } else {
          return x == std::get<T>(b.v);
        }
      },
      a.v);
}

TEST(RoundTrip, EveryValueTypeInBothVersions) {
  for (uint32_t version : {2u, 3u}) {
    SCOPED_TRACE(version);
    Writer w = all_types_writer();
    w.version = version;
    const std::vector<uint8_t> bytes = w.to_bytes();
    const File f = File::parse(bytes);
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_EQ(f.file_size(), bytes.size());

    // Same keys, same order, same values, bit for bit.
    const auto expected = all_types();
    ASSERT_EQ(f.metadata().size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(f.metadata()[i].first, expected[i].first);
      EXPECT_TRUE(same_value(f.metadata()[i].second, expected[i].second))
          << expected[i].first << ": " << f.metadata()[i].second.to_string();
    }

    EXPECT_EQ(f.get_uint("u8"), 255u);
    EXPECT_EQ(f.get_int("i8"), -128);
    EXPECT_EQ(f.get_uint("u16"), 65535u);
    EXPECT_EQ(f.get_int("i16"), -32768);
    EXPECT_EQ(f.get_uint("u32"), 4294967295u);
    EXPECT_EQ(f.get_int("i32"), std::numeric_limits<int32_t>::min());
    EXPECT_EQ(f.get_float("f32"), -0.15625);
    EXPECT_EQ(f.get_bool("bool_true"), true);
    EXPECT_EQ(f.get_bool("bool_false"), false);
    EXPECT_EQ(f.get_string("str"), "h\xc3\xa9llo\nworld");
    EXPECT_EQ(f.get_string("str_empty"), "");
    EXPECT_EQ(f.get_string("str_nul"), std::string("a\0b", 3));
    EXPECT_EQ(f.get_uint("u64"), std::numeric_limits<uint64_t>::max());
    EXPECT_EQ(f.get_int("i64"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(f.get_float("f64"), 1e-300);
    EXPECT_TRUE(std::isnan(*f.get_float("f32_nan")));
    EXPECT_EQ(f.get_int_array("arr_i32"), (std::vector<int64_t>{-1, 0, 1}));
    EXPECT_EQ(f.get_int_array("arr_u16"), (std::vector<int64_t>{1, 65535}));
    EXPECT_EQ(f.get_float_array("arr_f32"), (std::vector<float>{0.5f, -2.25f}));
    EXPECT_EQ(f.get_string_array("arr_str"), (std::vector<std::string>{"", "x", "\xe2\x96\x81y"}));
    EXPECT_EQ(f.get_float_array("arr_empty"), std::vector<float>{});
    EXPECT_EQ(f.find("arr_bool")->to_string(), "[true, false, true]");
    EXPECT_EQ(f.find("arr_nested")->to_string(), "[[1, 2], []]");
    EXPECT_EQ(f.find("arr_nested3")->to_string(), R"([[["deep"]], []])");
    EXPECT_EQ(f.find("arr_f64")->to_string(), "[0.1, -0]");
  }
}

TEST(RoundTrip, VersionFieldIsTheOnlyDifferenceBetweenV2AndV3) {
  Writer w2 = all_types_writer();
  w2.version = 2;
  Writer w3 = all_types_writer();
  std::vector<uint8_t> b2 = w2.to_bytes(), b3 = w3.to_bytes();
  ASSERT_EQ(b2.size(), b3.size());
  EXPECT_EQ(b2[4], 2);
  EXPECT_EQ(b3[4], 3);
  b2[4] = 3;
  EXPECT_EQ(b2, b3);
  w3.version = 4;
  EXPECT_THROW(w3.to_bytes(), Error);
}

TEST(RoundTrip, SettingAKeyAgainReplacesItInPlace) {
  Writer w;
  w.set_u32("a", 1);
  w.set_string("b", "x");
  w.set_u32("c", 3);
  w.set_f32("a", 2.5f);
  const std::vector<uint8_t> bytes = w.to_bytes();
  const File f = File::parse(bytes);
  ASSERT_EQ(f.metadata().size(), 3u);
  EXPECT_EQ(f.metadata()[0].first, "a");
  EXPECT_EQ(f.metadata()[0].second.type(), ValueType::FLOAT32);
  EXPECT_EQ(f.metadata()[1].first, "b");
  EXPECT_EQ(f.metadata()[2].first, "c");
}

TEST(RoundTrip, TensorsOfSeveralTypesWithCustomAlignments) {
  struct Spec {
    const char* name;
    TensorType type;
    std::vector<uint64_t> dims;
    size_t bytes;
  };
  const std::vector<Spec> specs = {
      {"tok_embd.weight", TensorType::F32, {3, 5}, 60},
      {"blk.0.attn_q.weight", TensorType::Q4_0, {64, 3}, 2 * 3 * 18},
      {"blk.0.ffn.weight", TensorType::Q4_K, {256, 2, 1, 2}, 4 * 144},
      {"odd", TensorType::F16, {7}, 14},
      {"bf", TensorType::BF16, {1, 1, 1}, 2},
      {"q8", TensorType::Q8_0, {32}, 34},
      {"q6", TensorType::Q6_K, {512}, 420},
      {"i8", TensorType::I8, {3}, 3},
  };
  for (uint32_t alignment : {1u, 8u, 32u, 64u, 4096u}) {
    SCOPED_TRACE(alignment);
    Writer w;
    w.set_string("general.architecture", "test");
    if (alignment != 32) w.set_u32("general.alignment", alignment);
    std::vector<std::vector<uint8_t>> data;
    for (size_t i = 0; i < specs.size(); ++i) {
      data.push_back(pattern(specs[i].bytes, static_cast<uint8_t>(i * 31)));
      w.add_tensor(specs[i].name, specs[i].type, specs[i].dims, data.back());
    }
    const std::vector<uint8_t> bytes = w.to_bytes();
    const File f = File::parse(bytes);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    EXPECT_EQ(bytes.size() % alignment, 0u);
    ASSERT_EQ(f.tensors().size(), specs.size());
    uint64_t expected_offset = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      const TensorInfo& t = f.tensors()[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, specs[i].name);
      EXPECT_EQ(t.type, specs[i].type);
      EXPECT_EQ(t.dims, specs[i].dims);
      EXPECT_EQ(t.n_bytes, specs[i].bytes);
      EXPECT_EQ(t.n_elements, std::accumulate(specs[i].dims.begin(), specs[i].dims.end(),
                                              uint64_t{1}, std::multiplies<>()));
      EXPECT_EQ(t.rows(), t.n_elements / specs[i].dims[0]);
      // Laid out in order, each at the next aligned offset.
      EXPECT_EQ(t.offset, expected_offset);
      expected_offset += (t.n_bytes + alignment - 1) / alignment * alignment;
      EXPECT_EQ(t.data, bytes.data() + f.data_offset() + t.offset);
      EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.n_bytes), data[i]);
      EXPECT_EQ(f.tensor(specs[i].name), &t);
      // Padding after the tensor is zero.
      for (uint64_t p = t.offset + t.n_bytes; p < expected_offset; ++p) {
        ASSERT_EQ(bytes[f.data_offset() + p], 0) << p;
      }
    }
    EXPECT_EQ(f.data_offset() + expected_offset, bytes.size());
    EXPECT_EQ(f.tensor("missing"), nullptr);
  }
}

TEST(RoundTrip, F32Helper) {
  Writer w;
  const std::vector<float> x = {1.0f, -2.0f, 0.25f, 3.5f, 0.0f, -0.0f};
  w.add_tensor_f32("x", {2, 3}, x);
  const std::vector<uint8_t> bytes = w.to_bytes();
  const File f = File::parse(bytes);
  const TensorInfo* t = f.tensor("x");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, TensorType::F32);
  EXPECT_EQ(t->rows(), 3u);
  ASSERT_EQ(t->n_bytes, 24u);
  EXPECT_EQ(std::memcmp(t->data, x.data(), 24), 0);
}

TEST(Writer, RefusesBadInput) {
  Writer w;
  const std::vector<uint8_t> q4(18);
  w.add_tensor("a", TensorType::Q4_0, {32}, q4);
  EXPECT_THROW(w.add_tensor("a", TensorType::Q4_0, {32}, q4), Error);              // duplicate name
  EXPECT_THROW(w.add_tensor("b", TensorType::Q4_0, {64}, q4), Error);              // size mismatch
  EXPECT_THROW(w.add_tensor("c", TensorType::Q4_0, {16, 2}, q4), Error);           // row not blocks
  EXPECT_THROW(w.add_tensor("d", TensorType::Q4_0, {}, q4), Error);                // no dims
  EXPECT_THROW(w.add_tensor("e", TensorType::Q4_0, {32, 1, 1, 1, 1}, q4), Error);  // 5 dims
  EXPECT_THROW(w.add_tensor("f", TensorType::Q4_0, {32, 0}, q4), Error);           // zero dim
  EXPECT_THROW(w.add_tensor("g", static_cast<TensorType>(4), {32}, q4), Error);    // unknown type
  EXPECT_THROW(w.add_tensor("h", TensorType::F32, {1ull << 32, 1ull << 32}, q4), Error);
  EXPECT_THROW(w.set_u32("general.alignment", 0), Error);
  EXPECT_THROW(w.set_u32("general.alignment", 48), Error);
  EXPECT_THROW(w.set_u64("general.alignment", 64), Error);  // must be u32
  EXPECT_THROW(w.set("mixed", Value(Array{ValueType::INT32, {int32_t{1}, 2.0f}})), Error);
  try {
    w.add_tensor("b", TensorType::Q4_0, {64}, q4);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("36"), std::string::npos) << e.what();
  }
  // The failed calls left the writer as it was.
  const std::vector<uint8_t> bytes = w.to_bytes();
  const File f = File::parse(bytes);
  EXPECT_EQ(f.tensors().size(), 1u);
  EXPECT_TRUE(f.metadata().empty());
}

TEST(Writer, WriteToPathIsAtomicAndOpenReadsItBack) {
  const std::string dir = test::scratch_dir();
  const std::string path = dir + "/model.gguf";
  test::write_file(path, "old contents");
  Writer w = all_types_writer();
  w.add_tensor_f32("t", {4}, std::vector<float>{1, 2, 3, 4});
  w.write(path);
  const File f = File::open(path);
  EXPECT_EQ(f.get_uint("u8"), 255u);
  ASSERT_NE(f.tensor("t"), nullptr);
  EXPECT_EQ(reinterpret_cast<const float*>(f.tensor("t")->data)[3], 4.0f);
  EXPECT_EQ(test::read_file(path),
            std::string(reinterpret_cast<const char*>(w.to_bytes().data()), w.to_bytes().size()));
  // No temporary file is left behind.
  size_t n_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++n_files;
    EXPECT_EQ(entry.path().filename(), "model.gguf");
  }
  EXPECT_EQ(n_files, 1u);

  try {
    w.write(dir + "/no/such/dir/model.gguf");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir/model.gguf"), std::string::npos) << e.what();
  }
}

TEST(Writer, MovedFileKeepsItsDataValid) {
  const std::string path = test::scratch_dir() + "/m.gguf";
  Writer w;
  w.add_tensor_f32("t", {2}, std::vector<float>{7, 8});
  w.write(path);
  File a = File::open(path);
  File b = std::move(a);
  EXPECT_EQ(reinterpret_cast<const float*>(b.tensor("t")->data)[1], 8.0f);
  const std::vector<uint8_t> other = w.to_bytes();
  File c = File::parse(other);
  c = std::move(b);  // move assignment releases c's old state and takes b's mapping
  EXPECT_EQ(reinterpret_cast<const float*>(c.tensor("t")->data)[0], 7.0f);
}

// An independent parser, written from the spec in Python, reads what the writer produced and
// prints every field; the expected text below is written by hand.
constexpr const char* kPythonReader = R"PY(
import struct, sys
b = open(sys.argv[1], 'rb').read()
pos = 0
def take(fmt):
    global pos
    v = struct.unpack_from('<' + fmt, b, pos); pos += struct.calcsize('<' + fmt); return v[0]
def string():
    global pos
    n = take('Q'); s = b[pos:pos + n]; pos += n; return s
FMT = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
def value(t):
    if t == 8: return 's:' + string().hex()
    if t == 9:
        et = take('I'); n = take('Q')
        return 'a%d[%s]' % (et, ','.join(value(et) for _ in range(n)))
    v = take(FMT[t])
    return repr(v).lower() if t == 7 else repr(v)
assert b[:4] == b'GGUF'; pos = 4
print('version', take('I'))
nt = take('Q'); nkv = take('Q')
align = 32
for _ in range(nkv):
    k = string().decode(); t = take('I'); v = value(t)
    if k == 'general.alignment': align = int(v)
    print('kv', k, t, v)
infos = []
for _ in range(nt):
    name = string().decode(); nd = take('I'); dims = [take('Q') for _ in range(nd)]
    infos.append((name, dims, take('I'), take('Q')))
start = (pos + align - 1) // align * align
assert all(x == 0 for x in b[pos:start]), 'header padding not zero'
for name, dims, t, off in infos:
    print('tensor', name, dims, t, off, b[start + off:start + off + 6].hex())
print('data_start', start, 'size', len(b))
)PY";

TEST(Writer, OutputMatchesAnIndependentPythonParser) {
  const std::string dir = test::scratch_dir();
  test::write_file(dir + "/reader.py", kPythonReader);
  Writer w;
  w.version = 2;
  w.set_u32("general.alignment", 64);
  w.set_string("name", "ab");
  w.set("neg", Value(int16_t{-2}));
  w.set_f32("half", 0.5f);
  w.set_bool("yes", true);
  w.set("arr", Value(Array{ValueType::ARRAY, {Value::int32s({3, -4}), Value::strings({"z"})}}));
  w.set("big", Value(uint64_t{1} << 63));
  w.add_tensor_f32("w", {3}, std::vector<float>{1.0f, 2.0f, -1.0f});
  w.add_tensor("q", TensorType::Q8_0, {32}, pattern(34, 0x10));
  w.write(dir + "/out.gguf");
  const test::CommandResult r =
      test::run_shell("/usr/bin/python3 " + dir + "/reader.py " + dir + "/out.gguf");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Header: 24 bytes; keys and tensor infos follow; their sizes summed by hand:
  // general.alignment 8+17+4+4=33, name 8+4+4+8+2=26, neg 8+3+4+2=17, half 8+4+4+4=20,
  // yes 8+3+4+1=16, arr 8+3+4 + 4+8 + (4+8+2*4) + (4+8+8+1) = 68, big 8+3+4+8=23,
  // tensor w 8+1+4+8+4+8=33, tensor q 33: 24+33+26+17+20+16+68+23+33+33 = 293 -> 320.
  // Data: w (12 bytes) at 0, q (34 bytes) at 64, padded to 128: size 448.
  EXPECT_EQ(r.out,
            "version 2\n"
            "kv general.alignment 4 64\n"
            "kv name 8 s:6162\n"
            "kv neg 3 -2\n"
            "kv half 6 0.5\n"
            "kv yes 7 true\n"
            "kv arr 9 a9[a5[3,-4],a8[s:7a]]\n"
            "kv big 10 9223372036854775808\n"
            "tensor w [3] 0 0 0000803f0000\n"
            "tensor q [32] 8 64 10171e252c33\n"
            "data_start 320 size 448\n");
}

}  // namespace
}  // namespace maas::gguf
