// Fuzzes the ONNX ranker reader (engine/onnx_mlp.h) on serialized ModelProto bytes. An
// accepted model must be a valid MLP (ValidateMlp), and writing it back as ONNX and
// reading that must give the same MLP.
#include <cstdint>
#include <string>

#include "engine/mlp.h"
#include "engine/onnx_mlp.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  auto mlp = ParseOnnxMlp(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
  if (!mlp.ok()) return 0;
  const absl::Status valid = ValidateMlp(*mlp);
  FUZZ_CHECK(valid.ok(), valid.ToString());
  auto bytes = SerializeOnnxMlp(*mlp);
  FUZZ_CHECK(bytes.ok(), bytes.status().ToString());
  auto again = ParseOnnxMlp(*bytes, "rewritten.onnx");
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK(again->layers.size() == mlp->layers.size(), "layer count differs after a rewrite");
  for (size_t i = 0; i < mlp->layers.size(); ++i) {
    const DenseLayer &a = mlp->layers[i], &b = again->layers[i];
    FUZZ_CHECK(a.in == b.in && a.out == b.out && a.relu == b.relu && a.weight == b.weight && a.bias == b.bias,
               absl::StrCat("layer ", i, " differs after a rewrite"));
  }
  return 0;
}
