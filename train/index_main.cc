// recserve-index: adds a prebuilt HNSW graph to a model version, as a new version.
//
//   recserve-index --bundle=models/default/1 --out=models/default/2 [--m=16] [--ef_construction=200]
//
// Reads and checks the bundle, builds the hnswlib graph of its catalog's embeddings
// (minutes for 1M items, which the server would otherwise spend at every load), writes
// the version again under --out with the graph as hnsw.bin, the manifest naming it
// (recall.hnsw_graph) and, unless --keep_index, recall.embedding_index = "hnsw". READY is
// written last, so --out may be a directory the server watches.
#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/catalog.h"
#include "engine/embedding_index.h"
#include "engine/file_util.h"

ABSL_FLAG(std::string, bundle, "", "Model version directory to read");
ABSL_FLAG(std::string, out, "", "New version directory to write (must not hold a READY version)");
ABSL_FLAG(int, m, 16, "HNSW graph degree");
ABSL_FLAG(int, ef_construction, 200, "HNSW build-time beam");
ABSL_FLAG(int, threads, 2, "Build threads");
ABSL_FLAG(bool, keep_index, false, "Keep the manifest's embedding_index instead of switching it to hnsw");

namespace recserve {
namespace {

constexpr char kGraphFile[] = "hnsw.bin";

int Run() {
  const std::string in = absl::GetFlag(FLAGS_bundle), out = absl::GetFlag(FLAGS_out);
  if (in.empty() || out.empty()) {
    std::fprintf(stderr, "recserve-index: give --bundle=DIR and --out=DIR\n");
    return 2;
  }
  if (FileExists(out + "/" + kReadyFile)) {
    std::fprintf(stderr, "recserve-index: %s already holds a READY version\n", out.c_str());
    return 2;
  }
  absl::StatusOr<BundleContents> contents = ReadBundle(in);
  if (!contents.ok()) {
    std::fprintf(stderr, "recserve-index: %s\n", contents.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<Catalog>> catalog = Catalog::Create(contents->items, kItemsFile);
  if (!catalog.ok()) {
    std::fprintf(stderr, "recserve-index: %s\n", catalog.status().ToString().c_str());
    return 1;
  }
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  o.hnsw_m = absl::GetFlag(FLAGS_m);
  o.hnsw_ef_construction = absl::GetFlag(FLAGS_ef_construction);
  o.build_threads = absl::GetFlag(FLAGS_threads);
  if (absl::Status s = MakeDirs(out); !s.ok()) {
    std::fprintf(stderr, "recserve-index: %s\n", s.ToString().c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = SaveHnswGraph(catalog->get(), o, out + "/" + kGraphFile); !s.ok()) {
    std::fprintf(stderr, "recserve-index: %s\n", s.ToString().c_str());
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  v1::RecallSpec* recall = contents->manifest.mutable_recall();
  recall->set_hnsw_graph(kGraphFile);
  if (!absl::GetFlag(FLAGS_keep_index)) recall->set_embedding_index("hnsw");
  if (absl::Status s = WriteBundle(*std::move(contents), out); !s.ok()) {
    std::fprintf(stderr, "recserve-index: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("hnsw graph of %d items (M=%d, ef_construction=%d) built in %.1f s; wrote %s\n", (*catalog)->size(),
              o.hnsw_m, o.hnsw_ef_construction, seconds, out.c_str());
  return 0;
}

}  // namespace
}  // namespace recserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("recserve-index --bundle=DIR --out=NEW_VERSION_DIR [--m=16 --ef_construction=200]");
  absl::ParseCommandLine(argc, argv);
  return recserve::Run();
}
