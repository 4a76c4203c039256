// ServedModel (a model file loaded with its tokenizer, chat template and running engine), and
// what loading one takes in memory.
#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "gguf/gguf.h"
#include "model/kv_cache.h"
#include "server/model_registry.h"
#include "tensor/thread_pool.h"

namespace maas::server {

ServedModel::~ServedModel() {
  if (engine) engine->stop();
}

std::unique_ptr<ServedModel> ServedModel::load(const std::string& id, const std::string& path,
                                               const engine::EngineConfig& config,
                                               bool copy_weights) {
  auto m = std::make_unique<ServedModel>();
  m->id = id;
  m->path = path;
  m->file = std::make_unique<gguf::File>(
      gguf::File::open(path, copy_weights ? gguf::File::Load::Copy : gguf::File::Load::Map));
  {
    // The engine's threads do not exist yet: a pool of as many for the rearranging.
    tensor::ThreadPool pool(config.threads);
    m->model = model::Model::load_and_pack(*m->file, &pool);
  }
  m->tok = tokenizer::Tokenizer::from_gguf(*m->file);
  if (m->tok->n_vocab() != m->model->hparams().n_vocab) {
    throw std::runtime_error(fmt::format("{}: the tokenizer has {} tokens, the model {}", path,
                                         m->tok->n_vocab(), m->model->hparams().n_vocab));
  }
  if (auto src = m->file->get_string("tokenizer.chat_template")) {
    try {
      m->chat_template = tmpl::Template::parse(*src);
    } catch (const tmpl::Error& e) {
      throw std::runtime_error(
          fmt::format("{}: its chat template does not parse: {}", path, e.what()));
    }
  }
  engine::EngineConfig c = config;
  c.model_id = id;
  m->engine = std::make_unique<engine::Engine>(*m->model, *m->tok, c);
  m->engine->start();
  m->created = static_cast<int64_t>(std::time(nullptr));
  m->weight_bytes = m->file->file_size();
  m->kv_bytes = kv_pool_bytes(m->model->hparams(), m->engine->config());
  return m;
}

uint64_t kv_pool_bytes(const model::HParams& hp, const engine::EngineConfig& c) {
  return engine::Engine::kv_pool(hp, c).bytes();
}

ModelFootprint estimate_footprint(const ModelSpec& spec) {
  const gguf::File file = gguf::File::open(spec.path, gguf::File::Load::Map);
  const auto model = model::Model::load(file);
  ModelFootprint f;
  f.weight_bytes = file.file_size();
  f.kv_bytes = kv_pool_bytes(model->hparams(), spec.engine);
  return f;
}

const char* model_state_name(ModelState s) {
  switch (s) {
    case ModelState::Unloaded:
      return "unloaded";
    case ModelState::Loading:
      return "loading";
    case ModelState::Ready:
      return "ready";
    case ModelState::Unloading:
      return "unloading";
    case ModelState::Failed:
      return "failed";
  }
  return "unknown";
}

}  // namespace maas::server
