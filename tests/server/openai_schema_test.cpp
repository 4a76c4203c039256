// Request parsing details not covered by the end-to-end API tests.
#include "server/openai_schema.h"

#include <gtest/gtest.h>

namespace maas::server {
namespace {

TEST(OpenAiSchema, ServiceTierMapsToPriorityClasses) {
  auto tier = [](const char* t) {
    Json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    if (t != nullptr) body["service_tier"] = t;
    return parse_chat_request(body).priority;
  };
  EXPECT_EQ(tier(nullptr), GenerationParams::kInteractive);
  EXPECT_EQ(tier("auto"), GenerationParams::kInteractive);
  EXPECT_EQ(tier("default"), GenerationParams::kInteractive);
  EXPECT_EQ(tier("priority"), GenerationParams::kInteractive);
  EXPECT_EQ(tier("flex"), GenerationParams::kBatch);
  EXPECT_LT(GenerationParams::kBatch, GenerationParams::kInteractive);  // engine: higher first
  EXPECT_EQ(parse_completion_request({{"model", "m"}, {"prompt", "x"}, {"service_tier", "flex"}})
                .priority,
            GenerationParams::kBatch);
  try {
    tier("scale");
    FAIL() << "an unknown tier was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "service_tier");
  }
  EXPECT_THROW(parse_completion_request({{"model", "m"}, {"prompt", "x"}, {"service_tier", 1}}),
               ApiError);
}

}  // namespace
}  // namespace maas::server
