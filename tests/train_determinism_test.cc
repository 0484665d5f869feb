// Reproducible training: the same log, options and seed give a byte-identical bundle
// whatever the thread count (the log trainer's default, LogTrainerOptions::parallel ==
// false), with SOURCE_DATE_EPOCH fixing the manifest's creation time. Trained on the real
// slice of tests/data (tests/data/README.md), written as the trainer writes versions, and
// compared file by file.
#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "train/event_log.h"
#include "train/split_flags.h"
#include "train/trainer.h"

namespace recserve {
namespace {

std::string SlicePath() {
  const char* root = std::getenv("RECSERVE_SOURCE_DIR");
  return std::string(root != nullptr ? root : ".") + "/tests/data/online-retail-slice.csv.gz";
}

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every regular file of a version directory: name -> bytes.
std::map<std::string, std::string> Files(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) files[entry.path().filename().string()] = ReadAll(entry.path());
  }
  return files;
}

TrainerOptions SeededOptions() {
  TrainerOptions o;
  o.verbose = false;
  o.mlp.verbose = false;
  o.seed = 11;
  o.mlp.seed = o.seed;
  o.item2vec.seed = o.seed;
  return o;
}

TEST(TrainDeterminismTest, SameSeedOnOneAndTwoThreadsGivesByteIdenticalBundles) {
  ASSERT_EQ(setenv("SOURCE_DATE_EPOCH", "1700000000", 1), 0);
  auto log = ReadEventLog(SlicePath(), EventLogOptions());
  ASSERT_TRUE(log.ok()) << log.status();
  const World world = WorldFromLog(*log, log->events, "online-retail-slice.csv.gz all");

  const int threads = omp_get_max_threads();
  std::string dirs[2];
  for (int run = 0; run < 2; ++run) {
    omp_set_num_threads(run + 1);
    ASSERT_EQ(omp_get_max_threads(), run + 1);
    auto trained = TrainModel(world, SeededOptions());
    ASSERT_TRUE(trained.ok()) << trained.status();
    EXPECT_EQ(trained->bundle.manifest.created_unix_ms(), 1700000000000);
    const std::string model_dir = testing::TempDir("determinism_" + std::to_string(run + 1) + "_threads");
    auto written = WriteVersion(trained->bundle, model_dir, 1);
    ASSERT_TRUE(written.ok()) << written.status();
    dirs[run] = *written;
  }
  omp_set_num_threads(threads);
  unsetenv("SOURCE_DATE_EPOCH");

  const std::map<std::string, std::string> one = Files(dirs[0]), two = Files(dirs[1]);
  for (const char* name : {"manifest.textproto", "ranker.onnx", "items.safetensors", "covisit.safetensors",
                           "calibration.safetensors", "READY"}) {
    EXPECT_EQ(one.count(name), 1u) << name << " missing from " << dirs[0];
  }
  std::vector<std::string> names_one, names_two;
  for (const auto& [name, bytes] : one) names_one.push_back(name);
  for (const auto& [name, bytes] : two) names_two.push_back(name);
  ASSERT_EQ(names_one, names_two);
  for (const auto& [name, bytes] : one) {
    const std::string& other = two.at(name);
    EXPECT_EQ(bytes.size(), other.size()) << name;
    // Not EXPECT_EQ on the bytes: a mismatch names the file and the first differing offset.
    size_t at = 0;
    while (at < bytes.size() && at < other.size() && bytes[at] == other[at]) ++at;
    EXPECT_TRUE(bytes == other) << name << " differs between 1 and 2 threads at byte " << at << " of "
                                << bytes.size();
  }
  std::filesystem::remove_all(std::filesystem::path(dirs[0]).parent_path());
  std::filesystem::remove_all(std::filesystem::path(dirs[1]).parent_path());
}

}  // namespace
}  // namespace recserve
