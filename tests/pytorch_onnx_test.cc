// A ranker trained and exported by PyTorch (Debian's python3-torch, torch.onnx.export)
// loads into recserve, scores like PyTorch in fp32, and passes the accuracy gate in int8
// as part of a real bundle version.
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "compression/compress.h"
#include "engine/file_util.h"
#include "engine/model.h"
#include "engine/onnx_mlp.h"
#include "engine/test_util.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

TEST(PyTorchOnnxTest, ExportedRankerScoresLikePyTorchAndPassesTheInt8Gate) {
  const std::string dir = testing::TempDir("pytorch_onnx");
  ASSERT_TRUE(e2e::WriteTinyBundle(dir, 1).ok());
  const std::string onnx = dir + "/torch.onnx", scores_file = dir + "/torch_scores.bin";
  std::string output;
  const std::string script = absl::StrCat(std::getenv("RECSERVE_SOURCE_DIR"), "/tests/export_torch_ranker.py");
  ASSERT_EQ(e2e::RunCommand(absl::StrCat("/usr/bin/python3 ", script, " --calibration=", dir,
                                         "/1/calibration.safetensors --onnx=", onnx,
                                         " --scores=", scores_file, " --rows=1000"), &output), 0)
      << output;

  // fp32: our reader + oneDNN ranker against PyTorch's own outputs.
  auto mlp = ReadOnnxMlp(onnx);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  auto bundle = ReadBundle(dir + "/1");
  ASSERT_TRUE(bundle.ok());
  ASSERT_EQ(mlp->input_dim(), bundle->calibration.width);
  std::vector<float> want(1000);
  std::ifstream(scores_file, std::ios::binary).read(reinterpret_cast<char*>(want.data()), 4000);
  auto ranker = CreateFp32Ranker(*mlp);
  ASSERT_TRUE(ranker.ok());
  const std::vector<float> rows(bundle->calibration.features.begin(),
                                bundle->calibration.features.begin() + 1000 * bundle->calibration.width);
  auto got = ScoreAll(**ranker, rows, 1000);
  ASSERT_TRUE(got.ok());
  for (int i = 0; i < 1000; ++i) ASSERT_NEAR((*got)[i], want[i], 1e-4) << "row " << i;

  // int8: the PyTorch ranker as version 2 of the bundle, loaded with the server's
  // default policy (int8) and gate.
  const std::string v2 = dir + "/2";
  std::filesystem::copy(dir + "/1", v2, std::filesystem::copy_options::recursive);
  std::filesystem::remove(v2 + "/READY");
  std::filesystem::copy_file(onnx, v2 + "/ranker.onnx", std::filesystem::copy_options::overwrite_existing);
  v1::Manifest m = bundle->manifest;
  m.clear_layer_sizes();
  for (int s : mlp->LayerSizes()) m.add_layer_sizes(s);
  const std::string bytes = *ReadFileToString(v2 + "/ranker.onnx");
  for (v1::FileEntry& e : *m.mutable_files()) {
    if (e.name() == "ranker.onnx") {
      e.set_size(bytes.size());
      e.set_sha256(Sha256Hex(bytes));
    }
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(m, &text);
  ASSERT_TRUE(WriteFileAtomically(v2 + "/manifest.textproto", text).ok());
  ASSERT_TRUE(WriteFileAtomically(v2 + "/READY", "").ok());

  ModelOptions options;
  auto check = InstallCompression({}, &options);
  auto model = Model::Load(v2, 2, options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->ranker().kind(), "int8");
  v1::ModelFigures figures;
  absl::Status gate = check(**model, &figures);
  EXPECT_TRUE(gate.ok()) << gate;
  EXPECT_GT(figures.fp32_auc(), 0.6);
  std::printf("PyTorch ranker: fp32 AUC %.4f, int8 AUC %.4f (delta %+.5f) on the calibration rows\n",
              figures.fp32_auc(), figures.served_auc(), figures.auc_delta());
}

}  // namespace
}  // namespace recserve
